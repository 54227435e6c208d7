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
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mdn_jax import guards

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


class JointMixture(NamedTuple):
    """K diagonal Gaussians over all D dimensions sharing one set of weights."""

    logits: jax.Array  # [..., K]
    means: jax.Array  # [..., K, D]
    scales: jax.Array  # [..., K, D]


class PerDimMixture(NamedTuple):
    """An independent K-component 1-D Gaussian mixture for each of the D dimensions."""

    logits: jax.Array  # [..., D, K]
    means: jax.Array  # [..., D, K]
    scales: jax.Array  # [..., D, K]


class FullMixture(NamedTuple):
    """K full-covariance Gaussians (covariance = scale_tril @ scale_tril.T) sharing weights."""

    logits: jax.Array  # [..., K]
    means: jax.Array  # [..., K, D]
    scale_tril: jax.Array  # [..., K, D, D]


Mixture = JointMixture | PerDimMixture | FullMixture


def joint(logits, means, scales) -> JointMixture:
    """A joint diagonal mixture: logits `[..., K]`, means and scales `[..., K, D]`."""
    logits, means, scales = map(jnp.asarray, (logits, means, scales))
    _check_shapes("joint", logits.shape + means.shape[-1:], means.shape, scales.shape)
    guards.check_scales("joint", scales)
    return JointMixture(logits, means, scales)


def per_dim(logits, means, scales) -> PerDimMixture:
    """Independent per-dimension mixtures: logits, means and scales all `[..., D, K]`."""
    logits, means, scales = map(jnp.asarray, (logits, means, scales))
    _check_shapes("per_dim", logits.shape, means.shape, scales.shape)
    guards.check_scales("per_dim", scales)
    return PerDimMixture(logits, means, scales)


def full(logits, means, scale_tril) -> FullMixture:
    """A full-covariance mixture: logits `[..., K]`, means `[..., K, D]`, scale_tril `[..., K, D, D]`.

    Only the lower triangle of `scale_tril` is used; its diagonal must be positive.
    """
    logits, means, scale_tril = map(jnp.asarray, (logits, means, scale_tril))
    _check_shapes("full", logits.shape + means.shape[-1:], means.shape, scale_tril.shape[:-1])
    if scale_tril.shape[-1] != scale_tril.shape[-2]:
        raise ValueError(
            f"full: scale_tril must be square in its last two axes, got {scale_tril.shape}"
        )
    return FullMixture(logits, means, jnp.tril(scale_tril))


def _check_shapes(name, *shapes):
    if len(set(shapes)) != 1:
        raise ValueError(
            f"{name}: logits, means and scales disagree on shape: got {shapes}; "
            f"see the docstring of mdn_jax.{name} for the expected layout"
        )


# ---------------------------------------------------------------------------------------------
# Structure-independent views.


def structure(mixture: Mixture) -> str:
    """The structure's name: 'joint', 'per_dim' or 'full'."""
    if isinstance(mixture, JointMixture):
        return "joint"
    if isinstance(mixture, PerDimMixture):
        return "per_dim"
    if isinstance(mixture, FullMixture):
        return "full"
    raise TypeError(
        f"expected a mixture from mdn_jax.joint/per_dim/full, got {type(mixture).__name__}"
    )


def num_components(mixture: Mixture) -> int:
    """K, the number of components."""
    return mixture.logits.shape[-1]


def event_size(mixture: Mixture) -> int:
    """D, the output dimension."""
    return mixture.logits.shape[-2] if structure(mixture) == "per_dim" else mixture.means.shape[-1]


def batch_shape(mixture: Mixture) -> tuple[int, ...]:
    """The leading batch axes `...`."""
    return (
        mixture.logits.shape[:-2] if structure(mixture) == "per_dim" else mixture.logits.shape[:-1]
    )


def log_weights(mixture: Mixture) -> jax.Array:
    """Normalised log mixture weights: `[..., K]` (joint, full) or `[..., D, K]` (per_dim)."""
    return jax.nn.log_softmax(mixture.logits, axis=-1)


def component_means(mixture: Mixture) -> jax.Array:
    """Every component's mean, `[..., K, D]`, whatever the structure."""
    if structure(mixture) == "per_dim":
        return jnp.swapaxes(mixture.means, -1, -2)
    return mixture.means


def component_variances(mixture: Mixture) -> jax.Array:
    """Every component's marginal variances, `[..., K, D]`."""
    kind = structure(mixture)
    if kind == "per_dim":
        return jnp.swapaxes(jnp.square(mixture.scales), -1, -2)
    if kind == "joint":
        return jnp.square(mixture.scales)
    return jnp.sum(jnp.square(mixture.scale_tril), axis=-1)  # row norms of L: diag(L L^T)


# ---------------------------------------------------------------------------------------------
# Likelihood.


def _normal_log_prob(y, mean, scale):
    """Elementwise log N(y | mean, scale^2)."""
    z = (y - mean) / scale
    return -0.5 * jnp.square(z) - jnp.log(scale) - _HALF_LOG_TWO_PI


def component_log_probs(mixture: Mixture, y: jax.Array) -> jax.Array:
    """Log density of `y` `[..., D]` under each component (no weights).

    Returns `[..., K]` for joint and full, `[..., D, K]` for per_dim.
    """
    y = jnp.asarray(y)
    guards.check_targets(y.shape, event_size=event_size(mixture), batch_shape=batch_shape(mixture))
    kind = structure(mixture)
    if kind == "per_dim":
        return _normal_log_prob(y[..., :, None], mixture.means, mixture.scales)  # [..., D, K]
    if kind == "joint":
        lp = _normal_log_prob(y[..., None, :], mixture.means, mixture.scales)  # [..., K, D]
        return jnp.sum(lp, axis=-1)  # over D
    # full: -0.5 |L^-1 (y - m)|^2 - sum log diag L - D/2 log 2 pi
    diff = y[..., None, :] - mixture.means  # [..., K, D]
    tril = mixture.scale_tril
    shape = jnp.broadcast_shapes(diff.shape[:-1], tril.shape[:-2])
    diff = jnp.broadcast_to(diff, shape + diff.shape[-1:])
    tril = jnp.broadcast_to(tril, shape + tril.shape[-2:])
    white = _forward_substitution(tril, diff)  # L^-1 (y - m): [..., K, D]
    maha = jnp.sum(jnp.square(white), axis=-1)  # over D
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(tril, axis1=-2, axis2=-1))), axis=-1)
    return -0.5 * maha - log_det - diff.shape[-1] * _HALF_LOG_TWO_PI


_UNROLLED_SOLVE_MAX_D = 8


def _forward_substitution(tril: jax.Array, b: jax.Array) -> jax.Array:
    """Solve `tril @ x = b` for lower-triangular `tril [..., D, D]`, `b [..., D]`; returns `[..., D]`.

    For D <= 8: D small steps, each vectorised over every batch axis. On CPU, batched
    `triangular_solve` makes one LAPACK call per matrix, which for 4096 x 100 tiny matrices
    took minutes where these steps take milliseconds (benchmarks/likelihood_throughput.py).
    For larger D the O(D^2) unrolled steps lose to LAPACK, so it is used there.
    """
    d = b.shape[-1]
    if d > _UNROLLED_SOLVE_MAX_D:
        return jax.lax.linalg.triangular_solve(tril, b[..., None], left_side=True, lower=True)[
            ..., 0
        ]
    solved = []
    for i in range(d):
        partial = b[..., i]
        if solved:
            partial = partial - jnp.einsum(
                "...j,...j->...", tril[..., i, :i], jnp.stack(solved, axis=-1)
            )
        solved.append(partial / tril[..., i, i])
    return jnp.stack(solved, axis=-1)


def log_prob(mixture: Mixture, y: jax.Array) -> jax.Array:
    """Log density of `y` `[..., D]` under the mixture, `[...]`.

    Batch axes of `y` and the mixture broadcast against each other.
    """
    joint_lp = log_weights(mixture) + component_log_probs(mixture, y)
    lp = jax.nn.logsumexp(joint_lp, axis=-1)  # over K
    if structure(mixture) == "per_dim":
        lp = jnp.sum(lp, axis=-1)  # independent dimensions: over D
    return lp


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
    weights = jax.nn.softmax(mixture.logits, axis=-1)
    if structure(mixture) == "per_dim":
        return jnp.einsum("...dk,...dk->...d", weights, mixture.means)  # over K
    return jnp.einsum("...k,...kd->...d", weights, mixture.means)


def variance(mixture: Mixture) -> jax.Array:
    """The exact marginal variance of each output dimension, `[..., D]`.

    Law of total variance: sum_k w_k (var_k + (mu_k - mean)^2), written around the mean so
    that it never subtracts two large numbers.
    """
    weights = jax.nn.softmax(mixture.logits, axis=-1)
    if structure(mixture) == "per_dim":
        centred = mixture.means - mean(mixture)[..., None]
        return jnp.sum(weights * (jnp.square(mixture.scales) + jnp.square(centred)), axis=-1)
    centred = mixture.means - mean(mixture)[..., None, :]  # [..., K, D]
    spread = component_variances(mixture) + jnp.square(centred)
    return jnp.einsum("...k,...kd->...d", weights, spread)


def most_probable_component(mixture: Mixture) -> jax.Array:
    """Index of the heaviest component, `[...]` int32.

    For per_dim the weights are summed over the D dimensions first, as the reference example
    does, so all dimensions use the same component index.
    """
    if structure(mixture) == "per_dim":
        return jnp.argmax(jnp.sum(jax.nn.softmax(mixture.logits, axis=-1), axis=-2), axis=-1)
    return jnp.argmax(mixture.logits, axis=-1)


def select_component(mixture: Mixture, index: jax.Array) -> jax.Array:
    """The mean of component `index` (`[...]` ints, or a Python int), `[..., D]`.

    Uses a one-hot mask rather than a gather: it vectorises the same on every backend.
    """
    means = component_means(mixture)  # [..., K, D]
    one_hot = jax.nn.one_hot(index, means.shape[-2], dtype=means.dtype)  # [..., K]
    return jnp.einsum("...k,...kd->...d", jnp.broadcast_to(one_hot, means.shape[:-1]), means)


def most_probable_mean(mixture: Mixture) -> jax.Array:
    """The reference example's point estimate: the mean of the most probable component, `[..., D]`."""
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
    sample_shape = tuple(sample_shape)
    component_key, noise_key = jax.random.split(key)
    logits = mixture.logits
    gumbel = jax.random.gumbel(component_key, sample_shape + logits.shape, dtype=logits.dtype)
    index = jnp.argmax(logits + temperature * gumbel, axis=-1)
    one_hot = jax.nn.one_hot(index, logits.shape[-1], dtype=mixture.means.dtype)
    kind = structure(mixture)
    if kind == "per_dim":
        # one_hot: sample_shape + [..., D, K]
        loc = jnp.sum(one_hot * mixture.means, axis=-1)
        scale = jnp.sum(one_hot * mixture.scales, axis=-1)
        noise = jax.random.normal(noise_key, loc.shape, dtype=loc.dtype)
        return loc + sigma_temperature * scale * noise
    loc = jnp.einsum("...k,...kd->...d", one_hot, mixture.means)  # sample_shape + [..., D]
    noise = jax.random.normal(noise_key, loc.shape, dtype=loc.dtype)
    if kind == "joint":
        scale = jnp.einsum("...k,...kd->...d", one_hot, mixture.scales)
        return loc + sigma_temperature * scale * noise
    tril = jnp.einsum("...k,...kij->...ij", one_hot, mixture.scale_tril)
    return loc + sigma_temperature * jnp.einsum("...ij,...j->...i", tril, noise)


def entropy_of_weights(mixture: Mixture) -> jax.Array:
    """Entropy in nats of the mixture weights, `[...]` (per_dim: summed over dimensions)."""
    log_w = log_weights(mixture)
    # A weight of exactly 0 (logit -inf) contributes 0 * log 0 = 0, not NaN.
    h = -jnp.sum(jnp.exp(log_w) * jnp.where(jnp.isfinite(log_w), log_w, 0.0), axis=-1)
    if structure(mixture) == "per_dim":
        h = jnp.sum(h, axis=-1)
    return h
