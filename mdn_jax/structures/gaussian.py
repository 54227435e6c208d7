"""Gaussian pieces the structure modules share: densities, bin masses, a triangular solve.

All elementwise functions broadcast their arguments; nothing here knows about mixtures.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
# Below this bin width in standard deviations, a corrected midpoint rule is exact to ~1e-7.
_NARROW = 0.1
_UNROLLED_SOLVE_MAX_D = 8


def normal_log_prob(y, mean, scale):
    """Elementwise log N(y | mean, scale^2)."""
    z = (y - mean) / scale
    return -0.5 * jnp.square(z) - jnp.log(scale) - HALF_LOG_TWO_PI


def forward_substitution(tril: jax.Array, b: jax.Array) -> jax.Array:
    """Solve `tril @ x = b` for lower-triangular `tril [..., D, D]`, `b [..., D]`;
    returns `[..., D]`.

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


def log_bin_mass(y, mean, scale, *, bin_width: float, low: float, high: float):
    """Log of the mass of N(mean, scale^2) on y's bin (edge bins open), elementwise.

    y's bin is `[y - w/2, y + w/2]` for `w = bin_width`; a bin reaching `low` or `high` is
    open to minus or plus infinity, so the bins' masses sum to exactly one.
    Stable everywhere: the difference of CDFs is taken in the tail away from the mean
    (`log_ndtr` and `log1p`), and for bins much narrower than the scale, where the CDF
    difference would cancel, by the midpoint rule with its second-order correction.
    Gradients are finite in both regimes (the unused branch gets safe inputs).
    """
    half = 0.5 * bin_width
    # First: exact when y and mean are close, so bin edges stay sharp at tiny scales.
    centred = y - mean
    upper = jnp.where(y + half >= high, jnp.inf, (centred + half) / scale)
    lower = jnp.where(y - half <= low, -jnp.inf, (centred - half) / scale)
    flip = lower > 0  # both ends above the mean: use the symmetric lower tail instead
    hi = jnp.where(flip, -lower, upper)
    lo = jnp.where(flip, -upper, lower)
    width = hi - lo
    narrow = width < _NARROW
    # Exact branch: log(Phi(hi) - Phi(lo)) = log Phi(hi) + log1p(-exp(log Phi(lo) - log Phi(hi))).
    lo_safe = jnp.where(narrow, hi - 1.0, lo)
    log_hi = log_ndtr(hi)
    exact = log_hi + jnp.log1p(-jnp.exp(log_ndtr(lo_safe) - log_hi))
    # Narrow branch: w phi(m) (1 + w^2 (m^2 - 1) / 24), m the bin centre in standard units.
    mid = jnp.where(narrow, 0.5 * (hi + lo), 0.0)
    w = jnp.where(narrow, width, 1.0)
    approx = (
        -0.5 * jnp.square(mid)
        - HALF_LOG_TWO_PI
        + jnp.log(w)
        + jnp.log1p(jnp.square(w) * (jnp.square(mid) - 1.0) / 24.0)
    )
    return jnp.where(narrow, approx, exact)


def check_shapes(name: str, *shapes) -> None:
    """Raise unless every shape is the same (the constructors' one validation)."""
    if len(set(shapes)) != 1:
        raise ValueError(
            f"{name}: logits, means and scales disagree on shape: got {shapes}; "
            f"see the docstring of mdn_jax.{name} for the expected layout"
        )
