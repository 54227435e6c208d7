"""The `joint` structure (Bishop's MDN): K diagonal Gaussians over all D dimensions sharing
one set of weights. logits `[..., K]`, means and scales `[..., K, D]`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mdn_jax import fastgrad, guards
from mdn_jax.structures import shared
from mdn_jax.structures.gaussian import check_shapes, log_bin_mass, normal_log_prob
from mdn_jax.structures.spec import Structure


class JointMixture(NamedTuple):
    """K diagonal Gaussians over all D dimensions sharing one set of weights."""

    logits: jax.Array  # [..., K]
    means: jax.Array  # [..., K, D]
    scales: jax.Array  # [..., K, D]


def joint(logits, means, scales) -> JointMixture:
    """A joint diagonal mixture: logits `[..., K]`, means and scales `[..., K, D]`."""
    logits, means, scales = map(jnp.asarray, (logits, means, scales))
    check_shapes("joint", logits.shape + means.shape[-1:], means.shape, scales.shape)
    guards.check_scales("joint", scales)
    return JointMixture(logits, means, scales)


def component_log_probs(mixture: JointMixture, y: jax.Array) -> jax.Array:
    """`[..., K]`: each component's log density of `y [..., D]`."""
    lp = normal_log_prob(y[..., None, :], mixture.means, mixture.scales)  # [..., K, D]
    return jnp.sum(lp, axis=-1)  # over D


def log_prob(mixture: JointMixture, y: jax.Array) -> jax.Array:
    return shared.log_prob(mixture, y, component_log_probs)


def component_variances(mixture: JointMixture) -> jax.Array:
    return jnp.square(mixture.scales)


def variance(mixture: JointMixture) -> jax.Array:
    return shared.variance(mixture, component_variances)


def sample(key, mixture: JointMixture, *, sample_shape, temperature, sigma_temperature):
    one_hot, noise_key = shared.draw_components(
        key,
        mixture.logits,
        sample_shape=sample_shape,
        temperature=temperature,
        dtype=mixture.means.dtype,
    )
    loc = jnp.einsum("...k,...kd->...d", one_hot, mixture.means)  # sample_shape + [..., D]
    noise = jax.random.normal(noise_key, loc.shape, dtype=loc.dtype)
    scale = jnp.einsum("...k,...kd->...d", one_hot, mixture.scales)
    return loc + sigma_temperature * scale * noise


def coherent_draw(mixture: JointMixture, uniform, normal, *, temperature, sigma_temperature):
    one_hot = shared.inverse_cdf_one_hot(mixture.logits, uniform, temperature=temperature)
    loc = jnp.einsum("...k,...kd->...d", one_hot, mixture.means)  # [S..., ..., D]
    scale = jnp.einsum("...k,...kd->...d", one_hot, mixture.scales)
    return loc + sigma_temperature * scale * normal


def marginals(mixture: JointMixture):
    return shared.marginals(mixture, mixture.scales)


def floored_scales(mixture: JointMixture) -> jax.Array:
    return mixture.scales


def discretised_log_prob(mixture: JointMixture, y, *, bin_width, low, high) -> jax.Array:
    """Exact bin masses: the product over dimensions inside each component."""
    options = dict(bin_width=bin_width, low=low, high=high)
    masses = jnp.sum(
        log_bin_mass(y[..., None, :], mixture.means, mixture.scales, **options), axis=-1
    )  # over D: [..., K]
    return jax.nn.logsumexp(jax.nn.log_softmax(mixture.logits, axis=-1) + masses, axis=-1)


def head_size(*, components: int, out_features: int) -> int:
    """K logits, K x D means, K x D scales."""
    return components + 2 * components * out_features


def _split(raw, *, components, out_features, mean_activation):
    logits, means, rest = shared.split_head(
        raw, components=components, out_features=out_features, mean_activation=mean_activation
    )
    return logits, means, rest.reshape(raw.shape[:-1] + (components, out_features))


def head_to_mixture(
    raw, *, components, out_features, scale_floor, mean_activation, scale_activation="softplus"
) -> JointMixture:
    logits, means, rest = _split(
        raw, components=components, out_features=out_features, mean_activation=mean_activation
    )
    return JointMixture(logits, means, shared.positive(rest, scale_floor, scale_activation))


def fast_head(
    raw, *, components, out_features, scale_floor, mean_activation, scale_activation="softplus"
) -> fastgrad.JointHead:
    logits, means, rest = _split(
        raw, components=components, out_features=out_features, mean_activation=mean_activation
    )
    return fastgrad.JointHead(
        logits, means, shared.log_positive(rest, scale_floor, scale_activation)
    )


def transposed_log_prob(
    raw_t, y, *, components, out_features, scale_floor, mean_activation, scale_activation="softplus"
) -> jax.Array:
    """`log_prob(head_to_mixture(raw_t.T, ...), y)` `[B]` for `y [B, D]`, from the raw outputs
    transposed, `raw_t [head_size, B]`: the same arithmetic with the batch as the minor axis.

    XLA:CPU vectorises elementwise loops along the minor axis only; with K x D minor (10 x 3) the
    exp, log and divisions of the likelihood and its gradient ran a few times slower than along
    a batch of 200 or 4096 (2-core Xeon; `benchmarks/RESULTS.md`, "Transposed likelihood").
    """
    k, d = components, out_features
    logits = raw_t[:k]  # [K, B]
    means = shared.location(raw_t[k : k + k * d].reshape(k, d, -1), mean_activation)  # [K, D, B]
    scales = shared.positive(raw_t[k + k * d :].reshape(k, d, -1), scale_floor, scale_activation)
    lp = jnp.sum(normal_log_prob(y.T[None], means, scales), axis=1)  # over D: [K, B]
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=0) + lp, axis=0)  # over K: [B]


def combine_members(mixture: JointMixture, *, axis: int) -> JointMixture:
    """M members on batch axis `axis` -> M * K components, weights (1/M) x each member's."""
    return JointMixture(
        shared.merge_members(shared.member_log_weights(mixture.logits, axis), axis, -1),
        shared.merge_members(mixture.means, axis, -2),
        shared.merge_members(mixture.scales, axis, -2),
    )


STRUCTURE = Structure(
    name="joint",
    mixture_type=JointMixture,
    create=joint,
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
