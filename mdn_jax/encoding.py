"""Input encodings: what the trunk sees of a normalised input `x [..., in_features]`.

A family of small NNX modules with one interface:

- built from the model config: `Encoding(config, rngs=rngs)`;
- `width`: the size of its output, the trunk's first input width;
- `__call__(x [..., in_features]) -> [..., width]`, float32 in and out;
- params: whatever `nnx.Param`s it holds are trained with the rest of the model, under the
  module's attribute `encoding`. `Identity` and `Fourier` hold none (Fourier's frequencies are a
  constant of the config), so they add nothing to the param tree and checkpoints from before
  encodings were modules restore as they were.

`for_config(config, rngs=...)` picks the encoding a config asks for; a new encoding is a class
here, the config fields it reads (`mdn_jax.config`) and a line in `for_config`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

if TYPE_CHECKING:
    from mdn_jax.config import ModelConfig


class Identity(nnx.Module):
    """x as it is: `[..., in_features] -> [..., in_features]`."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        del rngs  # no params
        self.width = config.in_features

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class Fourier(nnx.Module):
    """Random Fourier features: `[..., in_features] -> [..., 2 m]`, m = config.fourier_features.

    `[sin(2 pi x B), cos(2 pi x B)]` for the fixed `B = fourier_matrix(config)` (Tancik et al.
    2020): coordinate MLPs on raw inputs are blurry, this lets them learn sharp edges.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        del rngs  # no params: B is a constant of the config
        self.config = config  # static (hashable), so B is rebuilt, not stored, at trace time
        self.width = 2 * config.fourier_features

    def __call__(self, x: jax.Array) -> jax.Array:
        return fourier_encode(x, fourier_matrix(self.config))


def for_config(config: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
    """The encoding `config` asks for: Fourier when `fourier_features > 0`, else the identity."""
    if config.fourier_features:
        return Fourier(config, rngs=rngs)
    return Identity(config, rngs=rngs)


def fourier_matrix(config: ModelConfig) -> np.ndarray:
    """The fixed random frequencies `B [in_features, fourier_features]` (a numpy constant)."""
    rng = np.random.default_rng(config.fourier_seed)
    return (
        rng.normal(size=(config.in_features, config.fourier_features)) * config.fourier_scale
    ).astype(np.float32)


def fourier_encode(x: jax.Array, frequencies) -> jax.Array:
    """`x [..., in]` to `[..., 2m]`: sines and cosines of `2 pi x B` for `B [in, m]`."""
    angles = 2.0 * math.pi * (x @ jnp.asarray(frequencies, x.dtype))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
