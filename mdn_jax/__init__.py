"""mdn_jax: Mixture Density Networks in JAX."""
from mdn_jax.mixture import (FullMixture, JointMixture, Mixture, PerDimMixture, batch_shape,
                             component_log_probs, component_means, component_variances,
                             entropy_of_weights, event_size, full, joint, log_prob, log_weights,
                             mean, most_probable_component, most_probable_mean, nll, num_components,
                             per_dim, responsibilities, sample, select_component, structure,
                             variance)
