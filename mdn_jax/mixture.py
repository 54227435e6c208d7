"""Gaussian mixtures as pytrees: log-likelihood, sampling and moments, framework-free.

Three structures, each a NamedTuple (so a pytree that `jax.jit`, `jax.vmap` and `jax.grad`
pass through unchanged). Shapes use `...` for any number of leading batch axes, K for the
number of components and D for the output dimension:

- `JointMixture`   (`joint`):   logits `[..., K]`, means and scales `[..., K, D]`. One set of
  weights shared by all D dimensions; each component is a diagonal Gaussian (Bishop's MDN).
- `PerDimMixture`  (`per_dim`): logits, means and scales `[..., D, K]`. An independent
  K-component 1-D mixture per output dimension (the reference example's choice).
- `FullMixture`    (`full`):    logits `[..., K]`, means `[..., K, D]`, lower-triangular
  Cholesky factors `scale_tril` `[..., K, D, D]` with positive diagonals.

Everything is computed in log space: weights enter only through `jax.nn.log_softmax` and
components are combined with `logsumexp`; no probability is ever multiplied or `log(p + eps)`-ed.

This module is the public front: each structure's code lives in `mdn_jax.structures.<name>`,
and every function here looks the mixture's structure up once, by type, in that table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdn_jax import guards, structures

# Each structure's NamedTuple and constructor, re-exported (`as` marks them public).
from mdn_jax.structures.full import FullMixture as FullMixture
from mdn_jax.structures.full import full as full
from mdn_jax.structures.joint import JointMixture as JointMixture
from mdn_jax.structures.joint import joint as joint
from mdn_jax.structures.per_dim import PerDimMixture as PerDimMixture
from mdn_jax.structures.per_dim import per_dim as per_dim

Mixture = JointMixture | PerDimMixture | FullMixture

# ---------------------------------------------------------------------------------------------
# Structure-independent views.


def structure(mixture: Mixture) -> str:
    """The structure's name: 'joint', 'per_dim' or 'full'."""
    return structures.of(mixture).name


def num_components(mixture: Mixture) -> int:
    """K, the number of components."""
    return mixture.logits.shape[-1]


def event_size(mixture: Mixture) -> int:
    """D, the output dimension."""
    return structures.of(mixture).event_size(mixture)


def batch_shape(mixture: Mixture) -> tuple[int, ...]:
    """The leading batch axes `...`."""
    return structures.of(mixture).batch_shape(mixture)


def log_weights(mixture: Mixture) -> jax.Array:
    """Normalised log mixture weights: `[..., K]` (joint, full) or `[..., D, K]` (per_dim)."""
    return jax.nn.log_softmax(mixture.logits, axis=-1)


def component_means(mixture: Mixture) -> jax.Array:
    """Every component's mean, `[..., K, D]`, whatever the structure."""
    return structures.of(mixture).component_means(mixture)


def component_variances(mixture: Mixture) -> jax.Array:
    """Every component's marginal variances, `[..., K, D]`."""
    return structures.of(mixture).component_variances(mixture)


def marginals(mixture: Mixture) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Each output dimension's marginal density as a 1-D mixture, whatever the structure.

    Returns `(log_weights, means, scales)`, each `[..., D, K]`: dimension d's marginal is
    sum_k exp(log_weights[..., d, k]) N(means[..., d, k], scales[..., d, k]^2). For full
    mixtures the scale is the square root of the covariance diagonal.
    """
    return structures.of(mixture).marginals(mixture)


# ---------------------------------------------------------------------------------------------
# Likelihood.


def component_log_probs(mixture: Mixture, y: jax.Array) -> jax.Array:
    """Log density of `y` `[..., D]` under each component (no weights).

    Returns `[..., K]` for joint and full, `[..., D, K]` for per_dim.
    """
    return structures.of(mixture).component_log_probs(mixture, _checked_targets(mixture, y))


def log_prob(mixture: Mixture, y: jax.Array) -> jax.Array:
    """Log density of `y` `[..., D]` under the mixture, `[...]`.

    Batch axes of `y` and the mixture broadcast against each other.
    """
    return structures.of(mixture).log_prob(mixture, _checked_targets(mixture, y))


def _checked_targets(mixture: Mixture, y) -> jax.Array:
    """`y` as an array, refused with one line unless `[..., D]` broadcasting against the
    mixture's batch axes (shapes are static: the same eagerly and under `jit`)."""
    y = jnp.asarray(y)
    guards.check_targets(y.shape, event_size=event_size(mixture), batch_shape=batch_shape(mixture))
    return y


def nll(mixture: Mixture, y: jax.Array) -> jax.Array:
    """Mean negative log-likelihood in nats per sample over all batch axes, a scalar."""
    return -jnp.mean(log_prob(mixture, y))


def responsibilities(mixture: Mixture, y: jax.Array) -> jax.Array:
    """Posterior component probabilities given `y`: `[..., K]` (`[..., D, K]` for per_dim)."""
    return jax.nn.softmax(log_weights(mixture) + component_log_probs(mixture, y), axis=-1)


# ---------------------------------------------------------------------------------------------
# Moments and point estimates.


def mean(mixture: Mixture) -> jax.Array:
    """The exact mixture mean, `[..., D]`."""
    return structures.of(mixture).mean(mixture)


def variance(mixture: Mixture) -> jax.Array:
    """The exact marginal variance of each output dimension, `[..., D]`.

    Law of total variance: sum_k w_k (var_k + (mu_k - mean)^2), written around the mean so
    that it never subtracts two large numbers.
    """
    return structures.of(mixture).variance(mixture)


def most_probable_component(mixture: Mixture) -> jax.Array:
    """Index of the heaviest component, `[...]` int32.

    For per_dim the weights are summed over the D dimensions first, as the reference example
    does, so all dimensions use the same component index.
    """
    return structures.of(mixture).most_probable_component(mixture)


def select_component(mixture: Mixture, index: jax.Array) -> jax.Array:
    """The mean of component `index` (`[...]` ints, or a Python int), `[..., D]`.

    Uses a one-hot mask rather than a gather: it vectorises the same on every backend. The mask
    multiplies and sums elementwise (one fused loop) rather than through an einsum, which XLA:CPU
    runs as a batched matmul of one row per pixel (the mode render was 0.86x a hand-written
    `take_along_axis` render that way); the sum has one nonzero term, so the value is exact.
    """
    means = component_means(mixture)  # [..., K, D]
    one_hot = jax.nn.one_hot(index, means.shape[-2], dtype=means.dtype)  # [..., K]
    one_hot = jnp.broadcast_to(one_hot, means.shape[:-1])
    return jnp.sum(one_hot[..., None] * means, axis=-2)


def most_probable_mean(mixture: Mixture) -> jax.Array:
    """The reference example's point estimate: the mean of the most probable component,
    `[..., D]`."""
    return select_component(mixture, most_probable_component(mixture))


# ---------------------------------------------------------------------------------------------
# Sampling.


def sample(
    key: jax.Array,
    mixture: Mixture,
    *,
    sample_shape: tuple[int, ...] = (),
    temperature: float | jax.Array = 1.0,
    sigma_temperature: float | jax.Array = 1.0,
) -> jax.Array:
    """Draw samples, `sample_shape + [..., D]`.

    The component is drawn with weights `softmax(logits / temperature)`; the draw inside it has
    every standard deviation (every Cholesky factor) multiplied by `sigma_temperature`.
    `temperature -> 0` always picks the heaviest component (exactly at 0 too), and
    `sigma_temperature = 0` returns that component's mean, so `temperature=0,
    sigma_temperature=0` gives a deterministic point estimate. For per_dim the component is
    drawn independently for each dimension (at temperature 0: each dimension's own heaviest).

    Gumbel-max with the noise scaled by the temperature, argmax(logits + T * g), draws from
    softmax(logits / T) for T > 0 and stays well defined at T = 0.

    A negative or NaN temperature raises ValueError when its value is known (a Python number
    or a concrete array); a traced one (under `jit`) is not checked, and such values give
    meaningless draws (NaN for a NaN `sigma_temperature`).
    """
    guards.check_temperatures(temperature=temperature, sigma_temperature=sigma_temperature)
    return structures.of(mixture).sample(
        key,
        mixture,
        sample_shape=tuple(sample_shape),
        temperature=temperature,
        sigma_temperature=sigma_temperature,
    )


def entropy_of_weights(mixture: Mixture) -> jax.Array:
    """Entropy in nats of the mixture weights, `[...]` (per_dim: summed over dimensions)."""
    return structures.of(mixture).entropy_of_weights(mixture)
