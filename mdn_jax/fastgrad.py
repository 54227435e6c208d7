"""Mixture NLL losses with closed-form gradients, for the training hot path.

Autodiff of `-mean(logsumexp(log_softmax(logits) + log N_k))` builds the backward pass op by op
(the softmax of the log-softmax, the logsumexp, the square, the division, the log of the scale).
The gradient has a closed form in the responsibilities `r = softmax(log w + log N_k)`; here each
loss is a `jax.custom_vjp` whose backward pass is that closed form, a handful of fused
elementwise ops. Values and gradients equal autodiff of the plain log-space formula
(tests/test_fastgrad.py checks every one in float64, at ordinary and extreme inputs).

The inputs are the parametrisation a fast head emits: scales as LOG-scales (a log-scale head
needs no softplus and no extra log), and for `full` the Cholesky factor as its log-diagonal plus
its strict lower part. A scale floor is the head's business, applied before these functions
(for example `log_scales = logaddexp(raw, log(floor))`, i.e. scales = exp(raw) + floor).
Reverse mode only (`custom_vjp`): `jax.grad` and `jax.vjp` work, `jax.jvp`/`jacfwd` do not.
Shapes: `...` batch axes, K components, D output dimensions.

- `JointHead`:  logits `[..., K]`, means and log_scales `[..., K, D]`.
- `PerDimHead`: logits, means and log_scales `[..., D, K]`.
- `FullHead`:   logits `[..., K]`, means and log_diag `[..., K, D]`, lower `[..., K, D, D]`
  (only its strict lower triangle is read; L = diag(exp(log_diag)) + strict_lower(lower)).

Gradients, each divided by the batch size N (the loss is a mean), with z = (y - mu) / sigma:
  joint, per_dim: d/dlogits = w - r,  d/dmu = -r z / sigma,  d/dlog_sigma = r (1 - z^2).
  full, with u = L^-1 (y - mu) and v = L^-T u:  d/dmu = -r v,  d/dL_ij = -r v_i u_j (i > j),
  d/dlog_diag_i = r (1 - v_i u_i L_ii).  (With L diagonal, u = z and v = z / sigma.)
  every structure: d/dy = -sum over components of d/dmu.

The discretised (8-bit bin) loss, `discretised_nll`: for `full` it is the density times the bin
volume, so `full_nll` minus a constant, closed form throughout. For joint and per_dim only the
mixture combination is closed form (`mixture_nll`: d/dlogits = w - r, d/dlog P_k = -r); the
per-component bin masses log(Phi(b) - Phi(a)) keep autodiff, because their closed form
(phi(a) - phi(b)) / P cancels catastrophically for bins narrow against the scale, where
`mdn_jax.discretised` switches to a series whose own derivative would be needed, and the
`log_ndtr` evaluations that dominate that loss's cost stay either way.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mdn_jax.discretised import EIGHT_BIT, log_bin_mass

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
_UNROLLED_SOLVE_MAX_D = 8  # above this, LAPACK's triangular solve beats D unrolled steps


class JointHead(NamedTuple):
    """A joint diagonal mixture as a log-scale head emits it."""

    logits: jax.Array  # [..., K]
    means: jax.Array  # [..., K, D]
    log_scales: jax.Array  # [..., K, D]


class PerDimHead(NamedTuple):
    """Independent per-dimension 1-D mixtures as a log-scale head emits them."""

    logits: jax.Array  # [..., D, K]
    means: jax.Array  # [..., D, K]
    log_scales: jax.Array  # [..., D, K]


class FullHead(NamedTuple):
    """Full-covariance components as a log-Cholesky head emits them."""

    logits: jax.Array  # [..., K]
    means: jax.Array  # [..., K, D]
    log_diag: jax.Array  # [..., K, D]
    lower: jax.Array  # [..., K, D, D]; only the strict lower triangle is read


Head = JointHead | PerDimHead | FullHead


def nll(head: Head, y: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of `y [..., D]` over all batch axes, a scalar (nats/sample).

    `y` and the head share their batch axes `...` (no broadcasting: the backward pass divides by
    their size).
    """
    return _losses_for(head, y)[0](*head, y)


def discretised_nll(
    head: Head, y: jax.Array, *, bin_width: float = EIGHT_BIT, low: float = 0.0, high: float = 1.0
) -> jax.Array:
    """Mean discretised NLL of the bins of `y [..., D]` (as `mdn_jax.discretised`), a scalar."""
    bins = dict(bin_width=bin_width, low=low, high=high)
    return _losses_for(head, y)[1](*head, y, **bins)


def _losses_for(head: Head, y: jax.Array):
    """`(nll, discretised_nll)` for the head's structure (the one structure dispatch)."""
    losses = next((pair for kind, pair in _LOSSES.items() if isinstance(head, kind)), None)
    if losses is None:
        raise TypeError(
            f"expected a JointHead, PerDimHead or FullHead, got {type(head).__name__}; "
            "build one from the head's outputs"
        )
    if jnp.shape(y)[:-1] != jnp.shape(head.means)[:-2]:
        raise ValueError(
            f"y has batch axes {jnp.shape(y)[:-1]} but the head {jnp.shape(head.means)[:-2]}; "
            "broadcast them to one shape first"
        )
    return losses


def _batch_size(shape) -> int:
    return math.prod(shape)


# ---------------------------------------------------------------------------------------------
# Diagonal structures (joint and per_dim): the same closed form, on different axes.


def _responsibilities(log_w, log_n):
    """`(logsumexp over K of log_w + log_n, responsibilities r)`; K is the last axis."""
    joint = log_w + log_n
    lse = jax.nn.logsumexp(joint, axis=-1, keepdims=True)
    return lse[..., 0], jnp.exp(joint - lse)


def _diagonal_cotangents(c, weights, r, r_broadcast, z, inv_scale, component_axis):
    """Cotangents of (logits, means, log_scales, y); `c` is the output cotangent over N.

    `r_broadcast` is r laid out like z (`[..., K, D]` joint, `[..., D, K]` per_dim).
    """
    rz = r_broadcast * z
    d_means = -c * rz * inv_scale  # -r z / sigma
    d_log_scales = c * (r_broadcast - rz * z)  # r (1 - z^2)
    d_y = -jnp.sum(d_means, axis=component_axis)
    return c * (weights - r), d_means, d_log_scales, d_y


@jax.custom_vjp
def joint_nll(logits, means, log_scales, y):
    """Joint mixture NLL, mean over batch: logits `[..., K]`, means, log_scales `[..., K, D]`,
    y `[..., D]`, all with the same batch axes; a scalar."""
    return _joint_forward(logits, means, log_scales, y)[0]


def _joint_forward(logits, means, log_scales, y):
    log_w = jax.nn.log_softmax(logits, axis=-1)  # [..., K]
    inv_scale = jnp.exp(-log_scales)  # [..., K, D]
    z = (y[..., None, :] - means) * inv_scale  # [..., K, D]
    log_n = -0.5 * jnp.sum(jnp.square(z), axis=-1) - jnp.sum(log_scales, axis=-1)  # over D
    log_n = log_n - means.shape[-1] * _HALF_LOG_TWO_PI  # [..., K]
    log_lik, r = _responsibilities(log_w, log_n)  # [...], [..., K]
    return -jnp.mean(log_lik), (jnp.exp(log_w), r, z, inv_scale)


def _joint_backward(residuals, g):
    weights, r, z, inv_scale = residuals
    c = g / _batch_size(r.shape[:-1])
    return _diagonal_cotangents(c, weights, r, r[..., None], z, inv_scale, -2)  # y: over K


joint_nll.defvjp(_joint_forward, _joint_backward)


@jax.custom_vjp
def per_dim_nll(logits, means, log_scales, y):
    """Per-dimension mixture NLL, mean over batch: logits, means, log_scales `[..., D, K]`,
    y `[..., D]`, all with the same batch axes; a scalar."""
    return _per_dim_forward(logits, means, log_scales, y)[0]


def _per_dim_forward(logits, means, log_scales, y):
    log_w = jax.nn.log_softmax(logits, axis=-1)  # [..., D, K]
    inv_scale = jnp.exp(-log_scales)
    z = (y[..., :, None] - means) * inv_scale  # [..., D, K]
    log_n = -0.5 * jnp.square(z) - log_scales - _HALF_LOG_TWO_PI
    log_lik, r = _responsibilities(log_w, log_n)  # [..., D], [..., D, K]
    return -jnp.mean(jnp.sum(log_lik, axis=-1)), (jnp.exp(log_w), r, z, inv_scale)  # over D


def _per_dim_backward(residuals, g):
    weights, r, z, inv_scale = residuals
    c = g / _batch_size(r.shape[:-2])
    return _diagonal_cotangents(c, weights, r, r, z, inv_scale, -1)  # y: over K


per_dim_nll.defvjp(_per_dim_forward, _per_dim_backward)


# ---------------------------------------------------------------------------------------------
# Full covariance, in terms of the Cholesky factor L = diag(exp(log_diag)) + strict_lower.


def _solve(inv_diag, lower, b, *, transpose=False):
    """x with L x = b (or L^T x = b): inv_diag `[..., D]` (1 / L_ii), lower `[..., D, D]` (its
    strict lower triangle is read), b `[..., D]`; returns `[..., D]`."""
    d = b.shape[-1]
    if d > _UNROLLED_SOLVE_MAX_D:
        tril = jnp.tril(lower, -1) + (1.0 / inv_diag)[..., None] * jnp.eye(d, dtype=lower.dtype)
        return jax.lax.linalg.triangular_solve(
            tril, b[..., None], left_side=True, lower=True, transpose_a=transpose
        )[..., 0]
    # D small substitution steps, each vectorised over every batch axis (a batched LAPACK call
    # per tiny matrix is far slower on CPU; see mdn_jax.mixture).
    solved = {}
    for i in reversed(range(d)) if transpose else range(d):
        partial = b[..., i]
        for j, x_j in solved.items():  # j > i (L^T) or j < i (L): the entries solved so far
            partial = partial - (lower[..., j, i] if transpose else lower[..., i, j]) * x_j
        solved[i] = partial * inv_diag[..., i]
    return jnp.stack([solved[i] for i in range(d)], axis=-1)


@jax.custom_vjp
def full_nll(logits, means, log_diag, lower, y):
    """Full-covariance mixture NLL, mean over batch: logits `[..., K]`, means, log_diag
    `[..., K, D]`, lower `[..., K, D, D]` (strict lower triangle read), y `[..., D]`; a scalar."""
    return _full_forward(logits, means, log_diag, lower, y)[0]


def _full_forward(logits, means, log_diag, lower, y):
    log_w = jax.nn.log_softmax(logits, axis=-1)  # [..., K]
    inv_diag = jnp.exp(-log_diag)  # [..., K, D]
    white = _solve(inv_diag, lower, y[..., None, :] - means)  # u = L^-1 (y - mu)
    log_n = -0.5 * jnp.sum(jnp.square(white), axis=-1) - jnp.sum(log_diag, axis=-1)  # over D
    log_n = log_n - means.shape[-1] * _HALF_LOG_TWO_PI  # [..., K]
    log_lik, r = _responsibilities(log_w, log_n)
    residuals = (jnp.exp(log_w), r, white, inv_diag, jnp.exp(log_diag), lower)
    return -jnp.mean(log_lik), residuals


def _full_backward(residuals, g):
    weights, r, white, inv_diag, diag, lower = residuals
    c = g / _batch_size(r.shape[:-1])
    v = _solve(inv_diag, lower, white, transpose=True)  # L^-T u: [..., K, D]
    cr = c * r[..., None]  # [..., K, 1]
    d_means = -cr * v
    d_lower = jnp.tril(d_means[..., :, None] * white[..., None, :], -1)  # -r v_i u_j, i > j
    d_log_diag = cr * (1.0 - v * white * diag)  # r (1 - v_i u_i L_ii)
    d_y = -jnp.sum(d_means, axis=-2)  # over K
    return c * (weights - r), d_means, d_log_diag, d_lower, d_y


full_nll.defvjp(_full_forward, _full_backward)


# ---------------------------------------------------------------------------------------------
# The discretised loss: closed-form mixture combination over autodiffed bin masses.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def mixture_nll(logits, component_log_probs, summed_axes):
    """-sum of logsumexp_K(log_softmax(logits) + component_log_probs) / N, a scalar.

    logits and component_log_probs `[..., K]`; the last `summed_axes` axes of `...` are summed
    (independent dimensions, per_dim's D), the rest averaged (N is their size).
    """
    return _mixture_forward(logits, component_log_probs, summed_axes)[0]


def _mixture_forward(logits, component_log_probs, summed_axes):
    log_w = jax.nn.log_softmax(logits, axis=-1)
    log_lik, r = _responsibilities(log_w, component_log_probs)
    size = _batch_size(log_lik.shape[: log_lik.ndim - summed_axes])
    return -jnp.sum(log_lik) / size, (jnp.exp(log_w), r)


def _mixture_backward(summed_axes, residuals, g):
    weights, r = residuals
    c = g / _batch_size(r.shape[: r.ndim - 1 - summed_axes])
    return c * (weights - r), -c * r


mixture_nll.defvjp(_mixture_forward, _mixture_backward)


def _joint_discretised(logits, means, log_scales, y, **bins):
    masses = log_bin_mass(y[..., None, :], means, jnp.exp(log_scales), **bins)  # [..., K, D]
    return mixture_nll(logits, jnp.sum(masses, axis=-1), 0)  # over D


def _per_dim_discretised(logits, means, log_scales, y, **bins):
    masses = log_bin_mass(y[..., :, None], means, jnp.exp(log_scales), **bins)  # [..., D, K]
    return mixture_nll(logits, masses, 1)  # D summed, batch averaged


def _full_discretised(logits, means, log_diag, lower, y, *, bin_width, **_):
    """Density times bin volume, as `mdn_jax.discretised` does for full mixtures."""
    return full_nll(logits, means, log_diag, lower, y) - y.shape[-1] * math.log(bin_width)


_LOSSES = {  # structure: (nll, discretised nll)
    JointHead: (joint_nll, _joint_discretised),
    PerDimHead: (per_dim_nll, _per_dim_discretised),
    FullHead: (full_nll, _full_discretised),
}
