"""Per-dimension marginals of a mixture: each output dimension as a 1-D Gaussian mixture.

Every structure's marginal along one output dimension is a 1-D mixture of K Gaussians, so the
cdf, quantiles and the calibration scores (`mdn_jax.calibration`) are written once, over
`(log_weights, means, scales)`, each `[..., D, K]`:

- joint: the shared weights for every dimension, the per-dimension scales;
- per_dim: its own weights for each dimension;
- full: the shared weights and `scale = sqrt(diag(L L^T))`, the row norms of the Cholesky factor.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtri

from mdn_jax import mixture as mx
from mdn_jax.mixture import Mixture

# Safeguarded Newton steps in `quantile`. The bracket at least halves every second step, and
# Newton converges in a handful once close; 80 steps leave float32 resolution for any bracket.
_QUANTILE_STEPS = 80


class Marginals(NamedTuple):
    """Each output dimension's 1-D mixture: all three fields `[..., D, K]`."""

    log_weights: jax.Array
    means: jax.Array
    scales: jax.Array


def marginal_mixtures(mixture: Mixture) -> Marginals:
    """The D marginal 1-D mixtures of any structure, `Marginals` with fields `[..., D, K]`."""
    return Marginals(*mx.marginals(mixture))  # each structure's own entry in the table


def log_cdf(mixture: Mixture, y: jax.Array) -> jax.Array:
    """Log of each dimension's marginal cdf at `y` `[..., D]`, `[..., D]`; accurate in the
    lower tail."""
    marginals = marginal_mixtures(mixture)
    z = (jnp.asarray(y)[..., None] - marginals.means) / marginals.scales  # [..., D, K]
    return jax.nn.logsumexp(marginals.log_weights + log_ndtr(z), axis=-1)  # over K


def cdf(mixture: Mixture, y: jax.Array) -> jax.Array:
    """Each dimension's marginal cdf at `y` `[..., D]`: `P(Y_d <= y_d)`, `[..., D]`.

    Batch axes of `y` and the mixture broadcast against each other.
    """
    return jnp.exp(log_cdf(mixture, y))


def _cdf_and_density(marginals: Marginals, x: jax.Array):
    """The 1-D mixtures' cdf and density at `x` `[..., D]`, both `[..., D]`."""
    z = (x[..., None] - marginals.means) / marginals.scales  # [..., D, K]
    cdf_value = jnp.exp(jax.nn.logsumexp(marginals.log_weights + log_ndtr(z), axis=-1))
    log_density = -0.5 * jnp.square(z) - jnp.log(marginals.scales) - 0.5 * jnp.log(2 * jnp.pi)
    density = jnp.exp(jax.nn.logsumexp(marginals.log_weights + log_density, axis=-1))
    return cdf_value, density


@jax.jit
def quantile(mixture: Mixture, q: jax.Array) -> jax.Array:
    """Each dimension's marginal quantile: the `y_d` with `cdf(mixture, y)_d = q_d`, `[..., D]`.

    `q` broadcasts against the mixture's `[..., D]` (a scalar gives every dimension's
    q-quantile). Outside (0, 1) it returns -inf at 0, +inf at 1 and NaN elsewhere.

    The root lies between the smallest and the largest component quantile (there every
    component's cdf is below, respectively above, q), which brackets it; safeguarded Newton
    steps then shrink the bracket, falling back to bisection whenever Newton would leave it.
    Monotone in q, and accurate to 1e-5 in q: |cdf(quantile(q)) - q| <= 1e-5, except where a
    component is so narrow that the cdf climbs more than that between neighbouring floats;
    there the answer is within one float step of the exact quantile.
    """
    marginals = marginal_mixtures(mixture)
    q = jnp.asarray(q, marginals.means.dtype)
    shape = jnp.broadcast_shapes(q.shape, marginals.means.shape[:-1])
    q = jnp.broadcast_to(q, shape)
    inside = (q > 0) & (q < 1)
    safe_q = jnp.where(inside, q, 0.5)
    component = marginals.means + marginals.scales * ndtri(safe_q)[..., None]  # [..., D, K]
    present = marginals.log_weights > -jnp.inf  # a weight of exactly 0 does not bound the root
    low = jnp.min(jnp.where(present, component, jnp.inf), axis=-1)  # over K
    high = jnp.max(jnp.where(present, component, -jnp.inf), axis=-1)
    low, high = jnp.broadcast_to(low, shape), jnp.broadcast_to(high, shape)

    def step(_, carry):
        low, high, x, previous_width = carry
        value, density = _cdf_and_density(marginals, x)
        below = value < safe_q
        low, high = jnp.where(below, x, low), jnp.where(below, high, x)
        newton = x - (value - safe_q) / density
        # Newton only while it stays inside and the bracket keeps halving: a Newton step can
        # bounce between the two sides of a gap between components, shrinking neither.
        ok = jnp.isfinite(newton) & (newton >= low) & (newton <= high)
        ok = ok & (high - low <= 0.5 * previous_width)
        return low, high, jnp.where(ok, newton, 0.5 * (low + high)), high - low

    start = (low, high, 0.5 * (low + high), jnp.full(shape, jnp.inf, low.dtype))
    _, _, x, _ = jax.lax.fori_loop(0, _QUANTILE_STEPS, step, start)
    x = jnp.where(low == high, low, x)  # one component (or all alike): its quantile exactly
    return jnp.where(inside, x, jnp.where(q == 0, -jnp.inf, jnp.where(q == 1, jnp.inf, jnp.nan)))
