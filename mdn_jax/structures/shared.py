"""Mixture pieces common to several structures.

Most are for structures with one set of weights `logits [..., K]` over components with means
`[..., K, D]` (joint and full); the rest (component draw, weight entropy, the head's
transforms) serve every structure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def draw_components(key, logits, *, sample_shape, temperature, dtype):
    """One-hot component draws `sample_shape + logits.shape` and the key left for the noise.

    Gumbel-max with the noise scaled by the temperature, argmax(logits + T * g), draws from
    softmax(logits / T) for T > 0 and stays well defined at T = 0 (the heaviest component).
    """
    component_key, noise_key = jax.random.split(key)
    gumbel = jax.random.gumbel(component_key, sample_shape + logits.shape, dtype=logits.dtype)
    index = jnp.argmax(logits + temperature * gumbel, axis=-1)
    return jax.nn.one_hot(index, logits.shape[-1], dtype=dtype), noise_key


def inverse_cdf_one_hot(
    logits: jax.Array, uniform: jax.Array, *, temperature: float | jax.Array = 1.0
) -> jax.Array:
    """One-hot `[..., K]` of the component the inverse CDF of the tempered weights picks at u.

    logits `[..., K]`, uniform broadcastable to `[...]`. The weights are
    `softmax(logits / temperature)` (at temperature 0: all weight on the heaviest component),
    accumulated in the fixed order 0..K-1; component k is chosen when
    `cdf[k-1] <= u * cdf[K-1] < cdf[k]`. Scaling u by the total makes float rounding of the
    sum harmless and means a component of weight exactly 0 is never chosen.
    """
    count = logits.shape[-1]
    positive = temperature > 0
    safe = jnp.where(positive, temperature, 1.0)
    heaviest = jax.nn.one_hot(jnp.argmax(logits, axis=-1), count, dtype=logits.dtype)
    weights = jnp.where(positive, jax.nn.softmax(logits / safe, axis=-1), heaviest)
    cdf = jnp.cumsum(weights, axis=-1)  # over K, in component order
    target = jnp.asarray(uniform)[..., None] * cdf[..., -1:]
    index = jnp.sum(cdf <= target, axis=-1)  # components wholly below u: [...]
    return jax.nn.one_hot(jnp.minimum(index, count - 1), count, dtype=logits.dtype)


def weight_entropy(logits) -> jax.Array:
    """Entropy in nats of `softmax(logits)` over the last axis."""
    log_w = jax.nn.log_softmax(logits, axis=-1)
    # A weight of exactly 0 (logit -inf) contributes 0 * log 0 = 0, not NaN.
    return -jnp.sum(jnp.exp(log_w) * jnp.where(jnp.isfinite(log_w), log_w, 0.0), axis=-1)


def positive(raw, scale_floor, scale_activation="softplus"):
    """The head's scales: `softplus(raw) + scale_floor` (or `exp(min(raw, EXP_CEILING)) +
    scale_floor` with scale_activation='exp'), strictly positive and finite."""
    return _SCALE_ACTIVATIONS[scale_activation][0](raw, scale_floor)


def log_positive(raw, scale_floor, scale_activation="softplus"):
    """`log(positive(raw, ...))`, computed directly: for 'exp' it is
    `logaddexp(raw, log(scale_floor))`, one op with no overflow (the fast head's log-scales)."""
    return _SCALE_ACTIVATIONS[scale_activation][1](raw, scale_floor)


# exp scales stop growing at raw = 40 (a scale of 2.4e17): its square, the variance, stays
# finite in float32, and so do values and gradients at any raw output.
EXP_CEILING = 40.0

_SCALE_ACTIVATIONS = {  # ModelConfig.scale_activation: (scale, log-scale), both floored
    "softplus": (
        lambda raw, floor: jax.nn.softplus(raw) + floor,
        lambda raw, floor: jnp.log(jax.nn.softplus(raw) + floor),
    ),
    "exp": (
        lambda raw, floor: jnp.exp(jnp.minimum(raw, EXP_CEILING)) + floor,
        lambda raw, floor: jnp.logaddexp(
            jnp.minimum(raw, EXP_CEILING), jnp.log(jnp.asarray(floor, raw.dtype))
        ),
    ),
}


def location(raw, mean_activation):
    """The head's means: raw, or squashed into (0, 1) with mean_activation='sigmoid'."""
    return jax.nn.sigmoid(raw) if mean_activation == "sigmoid" else raw


# ---------------------------------------------------------------------------------------------
# One set of weights `logits [..., K]`, means `[..., K, D]` (joint and full).


def event_size(mixture) -> int:
    return mixture.means.shape[-1]


def batch_shape(mixture) -> tuple[int, ...]:
    return mixture.logits.shape[:-1]


def component_means(mixture) -> jax.Array:
    return mixture.means


def log_prob(mixture, y, component_log_probs) -> jax.Array:
    """`[...]` for `y [..., D]`, given the structure's
    `component_log_probs(mixture, y) [..., K]`."""
    joint_lp = jax.nn.log_softmax(mixture.logits, axis=-1) + component_log_probs(mixture, y)
    return jax.nn.logsumexp(joint_lp, axis=-1)  # over K


def mean(mixture) -> jax.Array:
    weights = jax.nn.softmax(mixture.logits, axis=-1)
    return jnp.einsum("...k,...kd->...d", weights, mixture.means)  # over K


def variance(mixture, component_variances) -> jax.Array:
    """`[..., D]`, given the structure's `component_variances(mixture) [..., K, D]`.

    Law of total variance, sum_k w_k (var_k + (mu_k - mean)^2), written around the mean so
    that it never subtracts two large numbers.
    """
    weights = jax.nn.softmax(mixture.logits, axis=-1)
    centred = mixture.means - mean(mixture)[..., None, :]  # [..., K, D]
    spread = component_variances(mixture) + jnp.square(centred)
    return jnp.einsum("...k,...kd->...d", weights, spread)  # over K


def most_probable_component(mixture) -> jax.Array:
    return jnp.argmax(mixture.logits, axis=-1)


def entropy_of_weights(mixture) -> jax.Array:
    return weight_entropy(mixture.logits)


def marginals(mixture, scales) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-dimension 1-D mixtures `[..., D, K]` from each component's marginal scales
    `[..., K, D]`."""
    means = jnp.swapaxes(mixture.means, -1, -2)
    log_w = jax.nn.log_softmax(mixture.logits, axis=-1)[..., None, :]  # same for every d
    return jnp.broadcast_to(log_w, means.shape), means, jnp.swapaxes(scales, -1, -2)


def split_head(raw, *, components, out_features, mean_activation):
    """Raw outputs `[..., K + K*D + rest]` laid out as [K logits, K x D means, rest]:
    returns logits `[..., K]`, means `[..., K, D]` and the rest `[..., rest]`."""
    k, d = components, out_features
    logits = raw[..., :k]
    means = location(raw[..., k : k + k * d].reshape(raw.shape[:-1] + (k, d)), mean_activation)
    return logits, means, raw[..., k + k * d :]


def mean_bias_indices(*, components, out_features):
    """Indices `[K, D]` of the means in the layout of `split_head`."""
    return components + np.arange(components * out_features).reshape(components, out_features)


def merge_members(field, axis: int, component_axis: int) -> jax.Array:
    """`field` with its member axis `axis` (counted from the front, a batch axis) folded into
    its component axis `component_axis` (counted from the back, < 0): M and K become one axis
    of M * K components, member-major (index m * K + k)."""
    moved = jnp.moveaxis(field, axis, component_axis - 1)  # [..., M, K, tail...]
    shape = moved.shape
    tail = shape[component_axis + 1 :] if component_axis < -1 else ()
    return moved.reshape(
        shape[: component_axis - 1] + (shape[component_axis - 1] * shape[component_axis],) + tail
    )


def member_log_weights(logits, axis: int) -> jax.Array:
    """Each member's normalised log weights `[..., K]` plus log(1 / M), M = `logits.shape[axis]`:
    the ensemble weighs its members equally."""
    return jax.nn.log_softmax(logits, axis=-1) - jnp.log(logits.shape[axis]).astype(logits.dtype)
