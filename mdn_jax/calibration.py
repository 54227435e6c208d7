"""Calibration of a predictive mixture: CRPS, PIT and central-interval coverage, per dimension.

A density model is judged by calibration as much as by likelihood: a well-calibrated model's
PIT values (its marginal cdf at the observations) are uniform, and its central p-intervals hold
a share p of the observations. All scores use each dimension's marginal 1-D mixture
(`mdn_jax.marginals`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from mdn_jax.marginals import cdf, marginal_mixtures
from mdn_jax.mixture import Mixture

_SQRT_HALF = math.sqrt(0.5)
_LOG_SQRT_TWO_PI = 0.5 * math.log(2.0 * math.pi)
COVERAGE_LEVELS = (0.5, 0.9)


def _expected_abs(offset: jax.Array, scale: jax.Array) -> jax.Array:
    """E|X| for X ~ N(offset, scale^2): `offset erf(offset / (scale sqrt 2)) + 2 scale phi(offset / scale)`.

    Written without squaring the scale, so that scales from 1e-30 to 1e30 neither underflow
    nor overflow in float32; as scale -> 0 it tends to |offset|.
    """
    z = offset / scale
    density = jnp.exp(-0.5 * jnp.square(z) - _LOG_SQRT_TWO_PI)
    return offset * erf(z * _SQRT_HALF) + 2.0 * scale * density


def crps(mixture: Mixture, y: jax.Array) -> jax.Array:
    """The continuous ranked probability score of each dimension's marginal at `y` `[..., D]`, `[..., D]`.

    CRPS(F, y) = E|X - y| - E|X - X'| / 2 for X, X' drawn independently from F; lower is
    better, in the units of y. For a Gaussian mixture with weights w, means m and scales s it is,
    in closed form (Grimit et al. 2006),

        sum_k w_k A(y - m_k, s_k) - 1/2 sum_kl w_k w_l A(m_k - m_l, hypot(s_k, s_l))

    where A(offset, scale) is E|N(offset, scale^2)|. `hypot` keeps tiny and huge scales finite.
    """
    marginals = marginal_mixtures(mixture)
    weights = jnp.exp(marginals.log_weights)  # [..., D, K]
    means, scales = marginals.means, marginals.scales
    to_observation = _expected_abs(jnp.asarray(y)[..., None] - means, scales)  # [..., D, K]
    first = jnp.sum(weights * to_observation, axis=-1)  # over K
    pair_offsets = means[..., :, None] - means[..., None, :]  # [..., D, K, K]
    pair_scales = jnp.hypot(scales[..., :, None], scales[..., None, :])
    pair_weights = weights[..., :, None] * weights[..., None, :]
    spread = jnp.sum(pair_weights * _expected_abs(pair_offsets, pair_scales), axis=(-2, -1))
    return first - 0.5 * spread


def pit(mixture: Mixture, y: jax.Array) -> jax.Array:
    """The probability integral transform: each dimension's marginal cdf at `y` `[..., D]`, `[..., D]`.

    Uniform on (0, 1) over held-out data when the model is calibrated.
    """
    return cdf(mixture, y)


def coverage(
    mixture: Mixture, y: jax.Array, *, levels: tuple[float, ...] = COVERAGE_LEVELS
) -> jax.Array:
    """The share of observations `y` `[..., D]` inside each central interval, `[L, D]` for L levels.

    The central p-interval of a dimension's marginal runs from its (1 - p)/2 to its (1 + p)/2
    quantile; `y` lies inside exactly when |PIT - 1/2| <= p/2, so no quantile is computed.
    The share is taken over every batch axis; a calibrated model gives about `p` in row p.
    """
    distance = jnp.abs(pit(mixture, y) - 0.5)  # [..., D]
    distance = distance.reshape(-1, distance.shape[-1])  # [N, D]
    half = 0.5 * jnp.asarray(levels, distance.dtype)[:, None, None]  # [L, 1, 1]
    return jnp.mean(distance[None] <= half, axis=1)  # over N


def calibration_metrics(
    mixture: Mixture,
    y: jax.Array,
    *,
    bins: int = 10,
    levels: tuple[float, ...] = COVERAGE_LEVELS,
) -> dict:
    """Calibration on held-out data as a JSON-ready dict (plain floats, ints and lists).

    `mixture` is the model's prediction for held-out inputs and `y` `[..., D]` their observed
    values. Keys: `observations` (the number of `y` rows), `crps_mean` and `crps_per_dim`,
    `pit_histogram` (counts per dimension in `bins` equal bins of [0, 1], `[D][bins]`),
    `coverage` (`{"0.5": share, ...}`, over all dimensions) and `coverage_per_dim`.
    """
    if not (isinstance(bins, int) and bins >= 1):
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    if not all(0 < level < 1 for level in levels):
        raise ValueError(f"every coverage level must lie in (0, 1), got {levels!r}")
    scores = np.asarray(crps(mixture, y), np.float64)  # [..., D]
    pits = np.asarray(pit(mixture, y), np.float64)
    pits = pits.reshape(-1, pits.shape[-1])  # [N, D]
    shares = np.asarray(coverage(mixture, y, levels=tuple(levels)), np.float64)  # [L, D]
    edges = np.linspace(0.0, 1.0, bins + 1)
    histogram = [np.histogram(pits[:, d], bins=edges)[0].tolist() for d in range(pits.shape[1])]
    return {
        "observations": int(pits.shape[0]),
        "crps_mean": float(scores.mean()),
        "crps_per_dim": scores.reshape(-1, scores.shape[-1]).mean(axis=0).tolist(),
        "pit_histogram": histogram,
        "coverage": {f"{level:g}": float(row.mean()) for level, row in zip(levels, shares)},
        "coverage_per_dim": {f"{level:g}": row.tolist() for level, row in zip(levels, shares)},
    }
