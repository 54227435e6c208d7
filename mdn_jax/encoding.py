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
here, the config fields it reads (`mdn_jax.config`) and an entry in `_ENCODINGS`. `HashGrid`
holds one param, its table, under `encoding/table`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mdn_jax import hashgrid

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


class HashGrid(nnx.Module):
    """Multiresolution hash grid: `[..., in_features] -> [..., L F]` (`mdn_jax.hashgrid`).

    The normalised input is mapped affinely into the unit box, `hashgrid_box(config)`'s `low`
    to 0 and `high` to 1 (the defaults -1 and 1 are the image normalisation's frame, so the box
    is the whole picture: pixel centres of any resolution fall inside and read the grid's
    multilinear interpolation, never a nearest vertex). The table `[L, T, F]` is an
    `nnx.Param`, trained with the rest and drawn from the model's `params` rng.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.grid = hashgrid_config(config)  # frozen and hashable: static in the graphdef
        self.box = hashgrid_box(config)
        self.width = self.grid.output_size
        self.table = nnx.Param(hashgrid.init_hashgrid(rngs.params(), config=self.grid))

    def __call__(self, x: jax.Array) -> jax.Array:
        low, high = self.box
        unit = hashgrid.to_unit_box(x, low=low, high=high)
        return hashgrid.encode(self.table[...], unit, config=self.grid).astype(x.dtype)


_ENCODINGS = {"identity": Identity, "fourier": Fourier, "hashgrid": HashGrid}


def for_config(config: ModelConfig, *, rngs: nnx.Rngs) -> nnx.Module:
    """The encoding `config.encoding` names (an old config's Fourier features say 'fourier')."""
    return _ENCODINGS[config.encoding](config, rngs=rngs)


def hashgrid_config(config: ModelConfig) -> hashgrid.HashGridConfig:
    """The `HashGridConfig` a model config's `hashgrid_*` fields ask for."""
    return hashgrid.HashGridConfig(
        levels=config.hashgrid_levels,
        features_per_level=config.hashgrid_features,
        log2_table_size=config.hashgrid_log2_table,
        coarsest_resolution=config.hashgrid_min_res,
        finest_resolution=config.hashgrid_max_res,
    )


def hashgrid_box(config: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`(low, high)`, each `[in_features]`: the normalised inputs the hash grid spans."""
    low = config.hashgrid_low or (-1.0,) * config.in_features
    high = config.hashgrid_high or (1.0,) * config.in_features
    return low, high


def check_hashgrid(config: ModelConfig) -> None:
    """Raise a one-line ValueError if the config's hash grid cannot be built."""
    hashgrid.check_dims(config.in_features)
    hashgrid_config(config)  # HashGridConfig validates its fields
    low, high = hashgrid_box(config)
    if not all(a < b for a, b in zip(low, high)):
        raise ValueError(
            f"hashgrid_low must be below hashgrid_high in every feature, got {low} and {high}"
        )


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
