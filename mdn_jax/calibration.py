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
from mdn_jax.mixture import Mixture, batch_shape

_SQRT_HALF = math.sqrt(0.5)
_LOG_SQRT_TWO_PI = 0.5 * math.log(2.0 * math.pi)
COVERAGE_LEVELS = (0.5, 0.9)


def _expected_abs(offset: jax.Array, scale: jax.Array) -> jax.Array:
    """E|X| for X ~ N(offset, scale^2):
    `offset erf(offset / (scale sqrt 2)) + 2 scale phi(offset / scale)`.

    Written without squaring the scale, so that scales from 1e-30 to 1e30 neither underflow
    nor overflow in float32; as scale -> 0 it tends to |offset|.
    """
    z = offset / scale
    density = jnp.exp(-0.5 * jnp.square(z) - _LOG_SQRT_TWO_PI)
    return offset * erf(z * _SQRT_HALF) + 2.0 * scale * density


def crps(mixture: Mixture, y: jax.Array) -> jax.Array:
    """The continuous ranked probability score of each dimension's marginal at `y` `[..., D]`,
    `[..., D]`.

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
    """The probability integral transform: each dimension's marginal cdf at `y` `[..., D]`,
    `[..., D]`.

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
    rows_per_chunk: int = 65536,
) -> dict:
    """Calibration on held-out data as a JSON-ready dict (plain floats, ints and lists).

    `mixture` is the model's prediction for held-out inputs and `y` `[..., D]` their observed
    values (batch axes broadcast). Keys: `observations` (the number of `y` rows), `crps_mean`
    and `crps_per_dim`, `pit_histogram` (counts per dimension in `bins` equal bins of [0, 1],
    `[D][bins]`), `coverage` (`{"0.5": share, ...}`, over all dimensions, as `coverage`
    computes it) and `coverage_per_dim`. Rows go through in chunks of `rows_per_chunk`, so
    CRPS's K x K pairs never hold more than that many rows in memory.
    """
    if not (isinstance(bins, int) and bins >= 1):
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    if not all(0 < level < 1 for level in levels):
        raise ValueError(f"every coverage level must lie in (0, 1), got {levels!r}")
    if not (isinstance(rows_per_chunk, int) and rows_per_chunk >= 1):
        raise ValueError(f"rows_per_chunk must be a positive integer, got {rows_per_chunk!r}")
    rows, y = _flatten(mixture, y)  # batch [N], y [N, D]
    crps_sum, pits = np.zeros(y.shape[-1]), []
    for start in range(0, y.shape[0], rows_per_chunk):
        chunk = jax.tree_util.tree_map(lambda a: a[start : start + rows_per_chunk], rows)
        scores, values = _crps_and_pit(chunk, y[start : start + rows_per_chunk])
        crps_sum += np.asarray(scores, np.float64).sum(axis=0)  # over rows
        pits.append(np.asarray(values, np.float64))
    pits = np.concatenate(pits)  # [N, D]
    count = pits.shape[0]
    half = 0.5 * np.asarray(levels, np.float64)[:, None, None]  # [L, 1, 1]
    shares = np.mean(np.abs(pits - 0.5)[None] <= half, axis=1)  # [L, D], over N
    edges = np.linspace(0.0, 1.0, bins + 1)
    crps_per_dim = crps_sum / max(count, 1)
    return {
        "observations": int(count),
        "crps_mean": float(crps_per_dim.mean()),
        "crps_per_dim": crps_per_dim.tolist(),
        "pit_histogram": [np.histogram(column, bins=edges)[0].tolist() for column in pits.T],
        "coverage": {f"{level:g}": float(row.mean()) for level, row in zip(levels, shares)},
        "coverage_per_dim": {f"{level:g}": row.tolist() for level, row in zip(levels, shares)},
    }


@jax.jit
def _crps_and_pit(mixture: Mixture, y: jax.Array):
    return crps(mixture, y), pit(mixture, y)


def _flatten(mixture: Mixture, y: jax.Array):
    """The mixture and `y` broadcast to one batch shape and flattened to `[N]` and `[N, D]`."""
    y = jnp.asarray(y)
    batch = batch_shape(mixture)
    shape = jnp.broadcast_shapes(batch, y.shape[:-1])
    count = math.prod(shape)

    def flat(leaf):
        tail = leaf.shape[len(batch) :]
        return jnp.broadcast_to(leaf, shape + tail).reshape((count,) + tail)

    y = jnp.broadcast_to(y, shape + y.shape[-1:]).reshape(count, y.shape[-1])
    return jax.tree_util.tree_map(flat, mixture), y
