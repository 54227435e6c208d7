"""Multiresolution hash-grid input encoding (Muller et al. 2022, "Instant Neural Graphics
Primitives"), as pure JAX functions over one trainable table.

A point `x` in the unit box `[0, 1]^d` is looked up on L grids whose resolutions grow
geometrically from `coarsest_resolution` to `finest_resolution`. At level l the grid has
`N_l + 1` vertices per axis; each vertex owns a trainable feature vector of size F, and the
level's output is the multilinear interpolation (bilinear in 2-D, trilinear in 3-D) of the
`2^d` vertices of the cell holding `x`. The encoding is the L outputs side by side,
`[..., L * F]`, fed to an MLP. Coarse levels whose `(N_l + 1)^d` vertices fit in the table are
stored densely (one row per vertex, no collisions); finer levels hash a vertex `v` into the
table with instant-ngp's spatial hash `(v_1 * p_1 XOR ... XOR v_d * p_d) mod T` (uint32
arithmetic, `T = 2^log2_table_size`) and let training sort out the collisions.

Layout and speed: all levels share one table `[L, T, F]`; one call computes every level's
`2^d` corner indices at once, offsets them into the flattened `[L * T, F]` table and reads all
corners of all levels with a single gather, so the gradient is a single scatter-add.

Inputs outside the box are clamped onto it: the encoding continues the boundary's values
outward (constant along the outward normal), and its gradient along a clamped axis is zero.

How a model feeds it: after its usual input normalisation `(x - offset) / scale`, the model maps
the normalised inputs into the box with `to_unit_box(x, low=..., high=...)`, `low` and `high`
being the normalised training inputs' per-feature minimum and maximum, recorded in the model's
config beside the normalisation so that rendering and resuming map positions identically. For an
image the box then spans the training pixels' centres: a render at any other resolution reads
the same continuous function, and only its positions in the outermost half training pixel fall
outside and are clamped, like edge padding. Positions that already lie in the unit square (the
pixel centres of `mdn_jax.data.pixel_grid`) may also go in unchanged, as the photo probe does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# instant-ngp's hash primes (the first is 1: consecutive vertices along the first axis land in
# consecutive rows, which keeps the gather cache-friendly); three more large primes allow up to
# ten input dimensions, already 1024 corners per level.
PRIMES = (
    1,
    2654435761,
    805459861,
    3674653429,
    2097192037,
    1434869437,
    2165219737,
    3668340023,
    3041712731,
    4055616973,
)
MAX_LOG2_TABLE_SIZE = 24


@dataclasses.dataclass(frozen=True, kw_only=True)
class HashGridConfig:
    """The encoding's hyperparameters (hashable, so it can be a static argument of `jax.jit`).

    Attributes:
      levels: L, number of grid resolutions.
      features_per_level: F, size of the feature vector stored per vertex.
      log2_table_size: the table holds `T = 2^log2_table_size` rows per level (1 to 24).
      coarsest_resolution: N_0, cells per axis of the coarsest grid.
      finest_resolution: N_{L-1}, cells per axis of the finest grid; the levels between grow
        by the constant factor `(finest / coarsest)^(1 / (L - 1))`, rounded down per level.
      init_scale: the table starts uniform in `[-init_scale, init_scale]` (instant-ngp: 1e-4).
      dense_coarse_levels: True (default) stores a level densely when its `(N + 1)^d`
        vertices fit in the table; False hashes every level (for tests and ablations).
    """

    levels: int = 12
    features_per_level: int = 2
    log2_table_size: int = 15
    coarsest_resolution: int = 16
    finest_resolution: int = 256
    init_scale: float = 1e-4
    dense_coarse_levels: bool = True

    def __post_init__(self):
        validate(self)

    @property
    def table_size(self) -> int:
        return 2**self.log2_table_size

    @property
    def output_size(self) -> int:
        """Size of the encoding of one point, `levels * features_per_level`."""
        return self.levels * self.features_per_level

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HashGridConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"hash grid config has unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**values)


def validate(config: HashGridConfig) -> None:
    """Raise a one-line ValueError naming the bad field and the fix."""

    def integer(name, value, low, high=None):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not ok or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"hash grid {name} must be an integer {bound}, got {value!r}")

    integer("levels", config.levels, 1)
    integer("features_per_level", config.features_per_level, 1)
    integer("log2_table_size", config.log2_table_size, 1, MAX_LOG2_TABLE_SIZE)
    integer("coarsest_resolution", config.coarsest_resolution, 1)
    integer("finest_resolution", config.finest_resolution, config.coarsest_resolution)
    if config.levels * 2**config.log2_table_size > 2**31:
        raise ValueError(
            f"hash grid of {config.levels} levels x 2^{config.log2_table_size} rows exceeds 2^31 "
            "rows in all (row indices are 32-bit); use fewer levels or a smaller table"
        )
    if config.levels == 1 and config.finest_resolution != config.coarsest_resolution:
        raise ValueError(
            "a hash grid with one level has one resolution; set finest_resolution equal to "
            f"coarsest_resolution ({config.coarsest_resolution}) or use more levels"
        )
    scale = config.init_scale
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0):
        raise ValueError(f"hash grid init_scale must be a number >= 0, got {scale!r}")
    if not isinstance(config.dense_coarse_levels, bool):
        raise ValueError(
            "hash grid dense_coarse_levels must be True or False, got "
            f"{config.dense_coarse_levels!r}"
        )


def level_resolutions(config: HashGridConfig) -> tuple[int, ...]:
    """Cells per axis of every level, coarsest first: `floor(N_0 * b^l)`, `[L]`."""
    if config.levels == 1:
        return (config.coarsest_resolution,)
    growth = math.exp(
        (math.log(config.finest_resolution) - math.log(config.coarsest_resolution))
        / (config.levels - 1)
    )
    # The small epsilon keeps the finest level at finest_resolution despite rounding in b^l.
    return tuple(
        int(math.floor(config.coarsest_resolution * growth**level + 1e-6))
        for level in range(config.levels)
    )


def dense_levels(config: HashGridConfig, dims: int) -> tuple[bool, ...]:
    """Which levels are stored densely for `dims`-dimensional inputs, `[L]`."""
    check_dims(dims)
    return tuple(
        config.dense_coarse_levels and (resolution + 1) ** dims <= config.table_size
        for resolution in level_resolutions(config)
    )


def check_dims(dims: int) -> None:
    if not 1 <= dims <= len(PRIMES):
        raise ValueError(
            f"the hash grid takes 1 to {len(PRIMES)} input dimensions (it reads 2^d corners "
            f"per level), got {dims}; reduce the inputs or use Fourier features"
        )


def init_hashgrid(key: jax.Array, *, config: HashGridConfig) -> jax.Array:
    """A fresh table `[levels, table_size, features_per_level]` float32, uniform in
    `[-init_scale, init_scale]`; the same key gives the same table."""
    shape = (config.levels, config.table_size, config.features_per_level)
    return jax.random.uniform(
        key, shape, jnp.float32, minval=-config.init_scale, maxval=config.init_scale
    )


def to_unit_box(x: jax.Array, *, low, high) -> jax.Array:
    """Map `x [..., d]` affinely so that `low [d]` goes to 0 and `high [d]` to 1 (no clamp)."""
    low = jnp.asarray(low, x.dtype)
    return (x - low) / (jnp.asarray(high, x.dtype) - low)


@functools.lru_cache(maxsize=64)
def _level_constants(config: HashGridConfig, dims: int):
    """Static per-level numbers, as numpy arrays (cached: they depend only on the config).

    Returns resolutions `[L]` float32, dense mask `[L]` bool, multipliers `[L, d]` uint32 (the
    dense row strides `(N + 1)^i` on dense levels, the hash primes on hashed ones), row offsets
    of each level in the flattened table `[L]` uint32, and the corner offsets `[2^d, d]` uint32
    (corner c's bit i says whether it is the upper vertex along axis i).
    """
    resolutions = level_resolutions(config)
    dense = np.asarray(dense_levels(config, dims))
    multipliers = np.array(
        [
            [(r + 1) ** i for i in range(dims)] if is_dense else PRIMES[:dims]
            for r, is_dense in zip(resolutions, dense)
        ],
        np.uint64,
    ).astype(np.uint32)
    offsets = (np.arange(config.levels, dtype=np.uint64) * config.table_size).astype(np.uint32)
    corners = (np.arange(2**dims)[:, None] >> np.arange(dims)[None, :]) & 1
    return (
        np.asarray(resolutions, np.float32),
        dense,
        multipliers,
        offsets,
        corners.astype(np.uint32),
    )


def corner_indices_and_weights(x: jax.Array, *, config: HashGridConfig):
    """The table rows a lookup reads and their interpolation weights.

    `x [..., d]` (clamped to `[0, 1]^d`) gives flat row indices into the `[L * T, F]` table,
    `[..., L, 2^d]` uint32, and multilinear weights `[..., L, 2^d]` (they sum to 1 per level).
    """
    dims = x.shape[-1]
    resolutions, dense, multipliers, offsets, corners = _level_constants(config, dims)
    x = jnp.clip(jnp.asarray(x, jnp.result_type(x, jnp.float32)), 0.0, 1.0)
    position = x[..., None, :] * resolutions[:, None].astype(x.dtype)  # [..., L, d]
    # Clamp the cell to N - 1 so x = 1 lands in the last cell with fraction 1, never past it.
    cell = jnp.minimum(jnp.floor(position), resolutions[:, None] - 1)  # [..., L, d]
    fraction = position - cell  # [..., L, d], in [0, 1]
    vertex = cell.astype(jnp.uint32)[..., None, :] + corners  # [..., L, 2^d, d]
    scaled = vertex * multipliers[:, None, :]  # uint32, wraps mod 2^32 as the hash wants
    linear = jnp.sum(scaled, axis=-1, dtype=jnp.uint32)  # dense row: sum of v_i * stride_i
    hashed = functools.reduce(jnp.bitwise_xor, [scaled[..., i] for i in range(dims)])
    hashed = hashed & jnp.uint32(config.table_size - 1)
    rows = jnp.where(dense[:, None], linear, hashed) + offsets[:, None]  # [..., L, 2^d]
    # Corner c weighs prod_i (fraction_i if bit i of c else 1 - fraction_i).
    per_axis = jnp.where(corners == 1, fraction[..., None, :], 1.0 - fraction[..., None, :])
    weights = jnp.prod(per_axis, axis=-1)  # over d: [..., L, 2^d]
    return rows, weights


def encode(tables: jax.Array, x: jax.Array, *, config: HashGridConfig) -> jax.Array:
    """Hash-grid encoding of points `x [..., d]` in `[0, 1]^d`: `[..., levels * features]`.

    `tables [levels, table_size, features_per_level]` (from `init_hashgrid`). Differentiable in
    `tables` (a scatter-add into the rows read) and in `x` (piecewise multilinear); composes
    with `jax.jit` (pass `config` as a static argument), `jax.vmap` and `jax.grad`.
    """
    expected = (config.levels, config.table_size, config.features_per_level)
    if tuple(tables.shape) != expected:
        raise ValueError(
            f"hash grid tables must have shape {expected} for this config, got "
            f"{tuple(tables.shape)}; build them with init_hashgrid(key, config=config)"
        )
    check_dims(x.shape[-1])
    rows, weights = corner_indices_and_weights(x, config=config)
    flat = tables.reshape(-1, config.features_per_level)  # [L * T, F]
    # Every row index is < L * T by construction, so the gather needs no bounds handling.
    corner_features = flat.at[rows].get(mode="promise_in_bounds")  # [..., L, 2^d, F]
    weights = weights.astype(flat.dtype)
    levels = jnp.einsum("...c,...cf->...f", weights, corner_features)  # over corners: [..., L, F]
    return levels.reshape(*levels.shape[:-2], config.output_size)
