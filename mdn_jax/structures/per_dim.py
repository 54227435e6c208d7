"""The `per_dim` structure (the reference example's): an independent K-component 1-D Gaussian
mixture for each of the D dimensions. logits, means and scales all `[..., D, K]`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import fastgrad, guards
from mdn_jax.structures import shared
from mdn_jax.structures.gaussian import check_shapes, log_bin_mass, normal_log_prob
from mdn_jax.structures.joint import JointMixture
from mdn_jax.structures.joint import combine_members as joint_combine_members
from mdn_jax.structures.spec import Structure


class PerDimMixture(NamedTuple):
    """An independent K-component 1-D Gaussian mixture for each of the D dimensions."""

    logits: jax.Array  # [..., D, K]
    means: jax.Array  # [..., D, K]
    scales: jax.Array  # [..., D, K]


def per_dim(logits, means, scales) -> PerDimMixture:
    """Independent per-dimension mixtures: logits, means and scales all `[..., D, K]`."""
    logits, means, scales = map(jnp.asarray, (logits, means, scales))
    check_shapes("per_dim", logits.shape, means.shape, scales.shape)
    guards.check_scales("per_dim", scales)
    return PerDimMixture(logits, means, scales)


def event_size(mixture: PerDimMixture) -> int:
    return mixture.logits.shape[-2]


def batch_shape(mixture: PerDimMixture) -> tuple[int, ...]:
    return mixture.logits.shape[:-2]


def component_log_probs(mixture: PerDimMixture, y: jax.Array) -> jax.Array:
    """`[..., D, K]`: each dimension's components' log densities of `y [..., D]`."""
    return normal_log_prob(y[..., :, None], mixture.means, mixture.scales)


def log_prob(mixture: PerDimMixture, y: jax.Array) -> jax.Array:
    joint_lp = jax.nn.log_softmax(mixture.logits, axis=-1) + component_log_probs(mixture, y)
    lp = jax.nn.logsumexp(joint_lp, axis=-1)  # over K: [..., D]
    return jnp.sum(lp, axis=-1)  # independent dimensions: over D


def component_means(mixture: PerDimMixture) -> jax.Array:
    return jnp.swapaxes(mixture.means, -1, -2)


def component_variances(mixture: PerDimMixture) -> jax.Array:
    return jnp.swapaxes(jnp.square(mixture.scales), -1, -2)


def mean(mixture: PerDimMixture) -> jax.Array:
    weights = jax.nn.softmax(mixture.logits, axis=-1)
    return jnp.einsum("...dk,...dk->...d", weights, mixture.means)  # over K


def variance(mixture: PerDimMixture) -> jax.Array:
    """Law of total variance per dimension, written around the mean (see `shared.variance`)."""
    weights = jax.nn.softmax(mixture.logits, axis=-1)
    centred = mixture.means - mean(mixture)[..., None]
    return jnp.sum(weights * (jnp.square(mixture.scales) + jnp.square(centred)), axis=-1)


def most_probable_component(mixture: PerDimMixture) -> jax.Array:
    """The weights summed over the D dimensions first, as the reference example does."""
    return jnp.argmax(jnp.sum(jax.nn.softmax(mixture.logits, axis=-1), axis=-2), axis=-1)


def sample(key, mixture: PerDimMixture, *, sample_shape, temperature, sigma_temperature):
    """The component is drawn independently for each dimension."""
    one_hot, noise_key = shared.draw_components(
        key,
        mixture.logits,
        sample_shape=sample_shape,
        temperature=temperature,
        dtype=mixture.means.dtype,
    )  # sample_shape + [..., D, K]
    loc = jnp.sum(one_hot * mixture.means, axis=-1)
    scale = jnp.sum(one_hot * mixture.scales, axis=-1)
    noise = jax.random.normal(noise_key, loc.shape, dtype=loc.dtype)
    return loc + sigma_temperature * scale * noise


def entropy_of_weights(mixture: PerDimMixture) -> jax.Array:
    return jnp.sum(shared.weight_entropy(mixture.logits), axis=-1)  # over D


def coherent_draw(mixture: PerDimMixture, uniform, normal, *, temperature, sigma_temperature):
    """Each dimension's own weights `[..., D, K]`; the same u picks a component in each."""
    one_hot = shared.inverse_cdf_one_hot(
        mixture.logits, uniform[..., None], temperature=temperature
    )
    loc = jnp.sum(one_hot * mixture.means, axis=-1)  # [S..., ..., D]
    scale = jnp.sum(one_hot * mixture.scales, axis=-1)
    return loc + sigma_temperature * scale * normal


def marginals(mixture: PerDimMixture):
    return jax.nn.log_softmax(mixture.logits, axis=-1), mixture.means, mixture.scales


def floored_scales(mixture: PerDimMixture) -> jax.Array:
    return mixture.scales


def discretised_log_prob(mixture: PerDimMixture, y, *, bin_width, low, high) -> jax.Array:
    """Exact bin masses, one 1-D mixture per dimension."""
    options = dict(bin_width=bin_width, low=low, high=high)
    masses = log_bin_mass(y[..., :, None], mixture.means, mixture.scales, **options)  # [..., D, K]
    log_w = jax.nn.log_softmax(mixture.logits, axis=-1)
    return jnp.sum(jax.nn.logsumexp(log_w + masses, axis=-1), axis=-1)  # over K, then D


def head_size(*, components: int, out_features: int) -> int:
    """Three blocks `[D, K]`: logits, means, scales."""
    return 3 * out_features * components


def _split(raw, *, components, out_features):
    """Raw `[..., 3 D K]` as three blocks `[..., D, K]`: logits, means, raw scales."""
    blocks = raw.reshape(raw.shape[:-1] + (3, out_features, components))
    return blocks[..., 0, :, :], blocks[..., 1, :, :], blocks[..., 2, :, :]


def head_to_mixture(
    raw, *, components, out_features, scale_floor, mean_activation, scale_activation="softplus"
) -> PerDimMixture:
    logits, means, scales = _split(raw, components=components, out_features=out_features)
    return PerDimMixture(
        logits,
        shared.location(means, mean_activation),
        shared.positive(scales, scale_floor, scale_activation),
    )


def fast_head(
    raw, *, components, out_features, scale_floor, mean_activation, scale_activation="softplus"
) -> fastgrad.PerDimHead:
    logits, means, scales = _split(raw, components=components, out_features=out_features)
    return fastgrad.PerDimHead(
        logits,
        shared.location(means, mean_activation),
        shared.log_positive(scales, scale_floor, scale_activation),
    )


def mean_bias_indices(*, components: int, out_features: int):
    """Indices `[K, D]`: raw layout [3, D, K], the means are block 1, `[D, K]` within it."""
    d, k = out_features, components
    return (d * k + np.arange(d * k).reshape(d, k)).T


# The most components `combine_members` builds from per_dim members (M * K^D): the reference's
# K=10 over RGB is 1,000 per member, so this admits 65 of them.
MAX_COMBINED_COMPONENTS = 65536


def combine_members(mixture: PerDimMixture, *, axis: int) -> JointMixture:
    """M members on batch axis `axis` -> a joint mixture of M * K^D components, exactly.

    A per_dim mixture of M * K components would average each dimension's marginal on its own
    and forget which values came from the same member, so it is not the ensemble's density.
    A member's D independent K-component mixtures multiply out to K^D diagonal components
    instead, one per choice of a component in each dimension, weighted by the product of the
    chosen weights; each member becomes a joint mixture and the members are then combined as
    joint ones.
    """
    d, k = mixture.logits.shape[-2:]
    total = mixture.logits.shape[axis] * k**d
    if total > MAX_COMBINED_COMPONENTS:
        raise ValueError(
            f"{mixture.logits.shape[axis]} per_dim members of K={k} over D={d} combine into "
            f"{total} joint components, more than {MAX_COMBINED_COMPONENTS}; combine fewer "
            "members or train the joint structure"
        )
    # choices[j, c]: the component dimension j takes in combination c, `[D, K^D]` (static, so
    # the indexing below is a fixed gather XLA lowers to a copy).
    choices = np.indices((k,) * d).reshape(d, -1)
    dims = np.arange(d)[:, None]
    log_w = jax.nn.log_softmax(mixture.logits, axis=-1)[..., dims, choices]  # [..., D, K^D]
    means = mixture.means[..., dims, choices]
    scales = mixture.scales[..., dims, choices]
    members = JointMixture(
        jnp.sum(log_w, axis=-2),  # over D: the product of the chosen weights
        jnp.swapaxes(means, -1, -2),  # [..., K^D, D]
        jnp.swapaxes(scales, -1, -2),
    )
    return joint_combine_members(members, axis=axis)


def transposed_log_prob(
    raw_t, y, *, components, out_features, scale_floor, mean_activation, scale_activation="softplus"
) -> jax.Array:
    """`log_prob(head_to_mixture(raw_t.T, ...), y)` `[B]` for `y [B, D]`, from the raw outputs
    transposed, `raw_t [3 D K, B]`: the same arithmetic with the batch as the minor axis (see
    `joint.transposed_log_prob`)."""
    blocks = raw_t.reshape((3, out_features, components, -1))  # [3, D, K, B]
    means = shared.location(blocks[1], mean_activation)
    scales = shared.positive(blocks[2], scale_floor, scale_activation)
    lp = normal_log_prob(y.T[:, None, :], means, scales)  # [D, K, B]
    joint_lp = jax.nn.log_softmax(blocks[0], axis=1) + lp
    return jnp.sum(jax.nn.logsumexp(joint_lp, axis=1), axis=0)  # over K, then over D: [B]


STRUCTURE = Structure(
    name="per_dim",
    mixture_type=PerDimMixture,
    create=per_dim,
    event_size=event_size,
    batch_shape=batch_shape,
    component_log_probs=component_log_probs,
    log_prob=log_prob,
    component_means=component_means,
    component_variances=component_variances,
    mean=mean,
    variance=variance,
    most_probable_component=most_probable_component,
    sample=sample,
    coherent_draw=coherent_draw,
    entropy_of_weights=entropy_of_weights,
    marginals=marginals,
    floored_scales=floored_scales,
    discretised_log_prob=discretised_log_prob,
    head_size=head_size,
    head_to_mixture=head_to_mixture,
    fast_head=fast_head,
    mean_bias_indices=mean_bias_indices,
    combine_members=combine_members,
    transposed_log_prob=transposed_log_prob,
)
