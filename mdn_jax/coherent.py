"""Coherent sampling: one random draw per sample image, shared by all of its pixels.

`mdn_jax.sample` draws every pixel's component and noise independently, so a sampled image is
confetti: neighbouring pixels with the same mixture take different components. Here each sample
gets ONE uniform number u in [0, 1) and ONE standard-normal vector z `[D]`, and every pixel uses
them: its component is the inverse CDF of its (tempered) weights at u, in the fixed component
order 0..K-1, and its colour is that component's mean + sigma_temperature * (scale * z, or L z
for full covariances). Each pixel's marginal is still exactly its mixture (u is uniform and z
standard normal at every pixel), but pixels with similar weights take the same component and
the same noise, so a sample looks like an image.

Per_dim mixtures use each dimension's own weights with the same u (and z_d for dimension d).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdn_jax import mixture as mx
from mdn_jax import structures
from mdn_jax.structures.shared import inverse_cdf_one_hot


def coherent_sample(
    key: jax.Array,
    mixture: mx.Mixture,
    *,
    sample_shape: tuple[int, ...] = (),
    temperature: float | jax.Array = 1.0,
    sigma_temperature: float | jax.Array = 1.0,
) -> jax.Array:
    """Draw `sample_shape` coherent samples of a mixture batch `[...]`: `sample_shape + [..., D]`.

    Every element of the batch (every pixel) shares each sample's uniform and normal draws; see
    the module docstring. `temperature` and `sigma_temperature` act as in `mdn_jax.sample`
    (temperature 0: the heaviest component everywhere).
    """
    sample_shape = tuple(sample_shape)
    uniform_key, normal_key = jax.random.split(key)
    dtype = mx.component_means(mixture).dtype
    uniform = jax.random.uniform(uniform_key, sample_shape, dtype=dtype)
    normal = jax.random.normal(normal_key, sample_shape + (mx.event_size(mixture),), dtype=dtype)
    return coherent_draw(
        mixture,
        uniform,
        normal,
        temperature=temperature,
        sigma_temperature=sigma_temperature,
    )


def coherent_draw(
    mixture: mx.Mixture,
    uniform: jax.Array,
    normal: jax.Array,
    *,
    temperature: float | jax.Array = 1.0,
    sigma_temperature: float | jax.Array = 1.0,
) -> jax.Array:
    """The sample for given shared draws: uniform `[S...]` in [0, 1), normal `[S..., D]`.

    Returns `[S..., ..., D]` for a mixture batch `[...]`: the same uniform and normal at every
    element of the batch.
    """
    uniform, normal = jnp.asarray(uniform), jnp.asarray(normal)
    batch_axes = len(mx.batch_shape(mixture))
    uniform = uniform.reshape(uniform.shape + (1,) * batch_axes)  # [S..., 1...]
    normal = normal.reshape(normal.shape[:-1] + (1,) * batch_axes + normal.shape[-1:])
    return structures.of(mixture).coherent_draw(
        mixture, uniform, normal, temperature=temperature, sigma_temperature=sigma_temperature
    )


__all__ = ["coherent_draw", "coherent_sample", "inverse_cdf_one_hot"]
