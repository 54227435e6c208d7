"""The `full` structure: K full-covariance Gaussians sharing one set of weights.

logits `[..., K]`, means `[..., K, D]`, lower-triangular Cholesky factors `scale_tril`
`[..., K, D, D]` with positive diagonals (covariance = scale_tril @ scale_tril.T).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import fastgrad
from mdn_jax.structures import shared
from mdn_jax.structures.gaussian import HALF_LOG_TWO_PI, check_shapes, forward_substitution
from mdn_jax.structures.spec import Structure


class FullMixture(NamedTuple):
    """K full-covariance Gaussians (covariance = scale_tril @ scale_tril.T) sharing weights."""

    logits: jax.Array  # [..., K]
    means: jax.Array  # [..., K, D]
    scale_tril: jax.Array  # [..., K, D, D]


def full(logits, means, scale_tril) -> FullMixture:
    """A full-covariance mixture: logits `[..., K]`, means `[..., K, D]`,
    scale_tril `[..., K, D, D]`.

    Only the lower triangle of `scale_tril` is used; its diagonal must be positive.
    """
    logits, means, scale_tril = map(jnp.asarray, (logits, means, scale_tril))
    check_shapes("full", logits.shape + means.shape[-1:], means.shape, scale_tril.shape[:-1])
    if scale_tril.shape[-1] != scale_tril.shape[-2]:
        raise ValueError(
            f"full: scale_tril must be square in its last two axes, got {scale_tril.shape}"
        )
    return FullMixture(logits, means, jnp.tril(scale_tril))


def component_log_probs(mixture: FullMixture, y: jax.Array) -> jax.Array:
    """`[..., K]`: -0.5 |L^-1 (y - m)|^2 - sum log diag L - D/2 log 2 pi for `y [..., D]`."""
    diff = y[..., None, :] - mixture.means  # [..., K, D]
    tril = mixture.scale_tril
    shape = jnp.broadcast_shapes(diff.shape[:-1], tril.shape[:-2])
    diff = jnp.broadcast_to(diff, shape + diff.shape[-1:])
    tril = jnp.broadcast_to(tril, shape + tril.shape[-2:])
    white = forward_substitution(tril, diff)  # L^-1 (y - m): [..., K, D]
    maha = jnp.sum(jnp.square(white), axis=-1)  # over D
    log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(tril, axis1=-2, axis2=-1))), axis=-1)
    return -0.5 * maha - log_det - diff.shape[-1] * HALF_LOG_TWO_PI


def log_prob(mixture: FullMixture, y: jax.Array) -> jax.Array:
    return shared.log_prob(mixture, y, component_log_probs)


def component_variances(mixture: FullMixture) -> jax.Array:
    """`[..., K, D]`: the row norms of L, diag(L L^T)."""
    return jnp.sum(jnp.square(mixture.scale_tril), axis=-1)


def variance(mixture: FullMixture) -> jax.Array:
    return shared.variance(mixture, component_variances)


def sample(key, mixture: FullMixture, *, sample_shape, temperature, sigma_temperature):
    one_hot, noise_key = shared.draw_components(
        key,
        mixture.logits,
        sample_shape=sample_shape,
        temperature=temperature,
        dtype=mixture.means.dtype,
    )
    loc = jnp.einsum("...k,...kd->...d", one_hot, mixture.means)  # sample_shape + [..., D]
    noise = jax.random.normal(noise_key, loc.shape, dtype=loc.dtype)
    tril = jnp.einsum("...k,...kij->...ij", one_hot, mixture.scale_tril)
    return loc + sigma_temperature * jnp.einsum("...ij,...j->...i", tril, noise)


def coherent_draw(mixture: FullMixture, uniform, normal, *, temperature, sigma_temperature):
    one_hot = shared.inverse_cdf_one_hot(mixture.logits, uniform, temperature=temperature)
    loc = jnp.einsum("...k,...kd->...d", one_hot, mixture.means)  # [S..., ..., D]
    tril = jnp.einsum("...k,...kij->...ij", one_hot, mixture.scale_tril)
    return loc + sigma_temperature * jnp.einsum("...ij,...j->...i", tril, normal)


def marginals(mixture: FullMixture):
    """Dimension d of component k is N(mu_kd, Sigma_kdd): scale = sqrt of the covariance
    diagonal."""
    return shared.marginals(mixture, jnp.sqrt(component_variances(mixture)))


def floored_scales(mixture: FullMixture) -> jax.Array:
    """The Cholesky diagonals `[..., K, D]`."""
    return jnp.diagonal(mixture.scale_tril, axis1=-2, axis2=-1)


def discretised_log_prob(mixture: FullMixture, y, *, bin_width, low, high) -> jax.Array:
    """Density at y times the bin volume `bin_width ** D`: the mass of a box under a correlated
    Gaussian has no closed form, and this midpoint rule is exact as bin_width / sigma -> 0.
    (`low` and `high` are unused: the edge bins are not opened.)"""
    return log_prob(mixture, y) + y.shape[-1] * math.log(bin_width)


def head_size(*, components: int, out_features: int) -> int:
    """K logits, K x D means, K lower triangles of D (D + 1) / 2 entries each."""
    k, d = components, out_features
    return k + k * d + k * d * (d + 1) // 2


def _split(raw, *, components, out_features, mean_activation):
    """logits `[..., K]`, means `[..., K, D]` and each triangle's entries `[..., K, D (D+1) / 2]`
    in `tril_indices` order (row by row), with that order's rows and columns."""
    k, d = components, out_features
    logits, means, rest = shared.split_head(
        raw, components=k, out_features=d, mean_activation=mean_activation
    )
    rows, cols = np.tril_indices(d)  # numpy: static indices, also under jit
    return logits, means, rest.reshape(raw.shape[:-1] + (k, d * (d + 1) // 2)), rows, cols


def head_to_mixture(
    raw, *, components, out_features, scale_floor, mean_activation, scale_activation="softplus"
) -> FullMixture:
    """The triangles are filled row by row (`tril_indices` order); diagonals go through the
    scale floor, off-diagonals stay raw."""
    k, d = components, out_features
    logits, means, entries, rows, cols = _split(
        raw, components=k, out_features=d, mean_activation=mean_activation
    )
    entries = jnp.where(
        rows == cols, shared.positive(entries, scale_floor, scale_activation), entries
    )
    tril = jnp.zeros(raw.shape[:-1] + (k, d, d), raw.dtype).at[..., rows, cols].set(entries)
    return FullMixture(logits, means, tril)


def combine_members(mixture: FullMixture, *, axis: int) -> FullMixture:
    """M members on batch axis `axis` -> M * K components, weights (1/M) x each member's."""
    return FullMixture(
        shared.merge_members(shared.member_log_weights(mixture.logits, axis), axis, -1),
        shared.merge_members(mixture.means, axis, -2),
        shared.merge_members(mixture.scale_tril, axis, -3),
    )


def fast_head(
    raw, *, components, out_features, scale_floor, mean_activation, scale_activation="softplus"
) -> fastgrad.FullHead:
    """The log of the floored diagonal, and the raw entries as the strict lower triangle."""
    k, d = components, out_features
    logits, means, entries, rows, cols = _split(
        raw, components=k, out_features=d, mean_activation=mean_activation
    )
    diagonal = rows == cols
    log_diag = shared.log_positive(entries[..., diagonal], scale_floor, scale_activation)
    lower = jnp.zeros(raw.shape[:-1] + (k, d, d), raw.dtype)
    lower = lower.at[..., rows[~diagonal], cols[~diagonal]].set(entries[..., ~diagonal])
    return fastgrad.FullHead(logits, means, log_diag, lower)


def transposed_log_prob(raw_t, y, **options) -> jax.Array:
    """`log_prob(head_to_mixture(raw_t.T, **options), y)` `[B]`: the full structure's solves
    work per sample, so it takes the plain layout back (XLA folds the transpose into the head's
    matmul)."""
    return log_prob(head_to_mixture(raw_t.T, **options), y)


STRUCTURE = Structure(
    name="full",
    mixture_type=FullMixture,
    create=full,
    event_size=shared.event_size,
    batch_shape=shared.batch_shape,
    component_log_probs=component_log_probs,
    log_prob=log_prob,
    component_means=shared.component_means,
    component_variances=component_variances,
    mean=shared.mean,
    variance=variance,
    most_probable_component=shared.most_probable_component,
    sample=sample,
    coherent_draw=coherent_draw,
    entropy_of_weights=shared.entropy_of_weights,
    marginals=marginals,
    floored_scales=floored_scales,
    discretised_log_prob=discretised_log_prob,
    head_size=head_size,
    head_to_mixture=head_to_mixture,
    fast_head=fast_head,
    mean_bias_indices=shared.mean_bias_indices,
    combine_members=combine_members,
    transposed_log_prob=transposed_log_prob,
)
