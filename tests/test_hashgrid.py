"""Tests of mdn_jax.hashgrid against an independent float64 numpy reference.

The reference below loops over points, levels and corners in plain Python/numpy float64 with
Python-integer hashing (instant-ngp's primes, written out here); it never calls mdn_jax to
build an expected value.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdn_jax import hashgrid as hg

INSTANT_NGP_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)


# ---------------------------------------------------------------------------------------------
# float64 reference.


def ref_resolutions(levels, coarsest, finest):
    if levels == 1:
        return [coarsest]
    return [
        math.floor(coarsest * (finest / coarsest) ** (level / (levels - 1)) + 1e-6)
        for level in range(levels)
    ]


def ref_row(vertex, resolution, table_size, dense):
    """Row of a vertex (tuple of ints) in its level's table."""
    if dense:
        return sum(v * (resolution + 1) ** i for i, v in enumerate(vertex))
    hashed = 0
    for v, prime in zip(vertex, INSTANT_NGP_PRIMES):
        hashed ^= (v * prime) % 2**32
    return hashed % table_size


def ref_lookups(x, config):
    """For one point x [d] (float64): a list over levels of [(row, weight), ...] over corners."""
    dims = len(x)
    table_size = 2**config.log2_table_size
    resolutions = ref_resolutions(
        config.levels, config.coarsest_resolution, config.finest_resolution
    )
    out = []
    for resolution in resolutions:
        dense = config.dense_coarse_levels and (resolution + 1) ** dims <= table_size
        position = np.clip(np.asarray(x, np.float64), 0.0, 1.0) * resolution
        cell = np.minimum(np.floor(position), resolution - 1).astype(int)
        fraction = position - cell
        level = []
        for corner in itertools.product((0, 1), repeat=dims):
            weight = np.prod([f if c else 1.0 - f for c, f in zip(corner, fraction)])
            vertex = tuple(int(c + b) for c, b in zip(cell, corner))
            level.append((ref_row(vertex, resolution, table_size, dense), weight))
        out.append(level)
    return out


def ref_encode(tables, xs, config):
    """float64 encoding [n, L * F] of points xs [n, d] with tables [L, T, F]."""
    tables = np.asarray(tables, np.float64)
    result = np.zeros((len(xs), config.levels, config.features_per_level))
    for n, x in enumerate(np.asarray(xs, np.float64)):
        for level, lookups in enumerate(ref_lookups(x, config)):
            for row, weight in lookups:
                result[n, level] += weight * tables[level, row]
    return result.reshape(len(xs), -1)


def random_tables(config, seed=0):
    rng = np.random.default_rng(seed)
    shape = (config.levels, 2**config.log2_table_size, config.features_per_level)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


encode_jit = jax.jit(hg.encode, static_argnames="config")


def mixed(dims):
    """Six levels 8, 11, 16, 22, 32, 45, 64 (coarse ones dense, fine ones hashed) for `dims`."""
    return hg.HashGridConfig(
        levels=6,
        features_per_level=2,
        log2_table_size={1: 5, 2: 10, 3: 12}[dims],
        coarsest_resolution=8,
        finest_resolution=64,
    )


MIXED = mixed(2)


# ---------------------------------------------------------------------------------------------
# Values.


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_matches_float64_reference(dims):
    config = mixed(dims)
    dense = hg.dense_levels(config, dims)
    assert any(dense) and not all(dense), dense  # both kinds of level are exercised
    tables = random_tables(config, seed=dims)
    xs = np.random.default_rng(10 + dims).uniform(-0.1, 1.1, (64, dims)).astype(np.float32)
    got = encode_jit(jnp.asarray(tables), jnp.asarray(xs), config=config)
    assert got.shape == (64, config.output_size) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref_encode(tables, xs, config), rtol=1e-5, atol=2e-6)


def test_resolutions_grow_geometrically_from_coarsest_to_finest():
    for levels, coarsest, finest in [(16, 16, 512), (12, 16, 256), (8, 2, 2048), (3, 5, 5)]:
        config = hg.HashGridConfig(
            levels=levels, coarsest_resolution=coarsest, finest_resolution=finest
        )
        got = hg.level_resolutions(config)
        assert got == tuple(ref_resolutions(levels, coarsest, finest))
        assert got[0] == coarsest and got[-1] == finest


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dense", [True, False])
def test_exact_at_grid_vertices(dims, dense):
    """At x = vertex / N the level's output is that vertex's row, exactly (N a power of two,
    so every vertex is exact in float32)."""
    resolution = 8
    config = hg.HashGridConfig(
        levels=1,
        features_per_level=3,
        log2_table_size=12,
        coarsest_resolution=resolution,
        finest_resolution=resolution,
        dense_coarse_levels=dense,
    )
    assert hg.dense_levels(config, dims) == (dense,)
    vertices = np.array(list(itertools.product(range(resolution + 1), repeat=dims)))
    tables = random_tables(config, seed=dims)
    got = encode_jit(
        jnp.asarray(tables), jnp.asarray(vertices / resolution, jnp.float32), config=config
    )
    rows = [ref_row(tuple(v), resolution, config.table_size, dense) for v in vertices]
    np.testing.assert_array_equal(np.asarray(got), tables[0, rows])


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_continuous_across_cell_edges(dims):
    """Crossing any level's cell edge moves the encoding by no more than its slope allows.

    With tables in [-1, 1], level l's output changes by at most 2 N_l |dx| per feature along an
    axis, so a step of 2 eps across an edge moves it by at most 4 eps N_l: a wrong corner or
    weight at the edge would jump by order 1.
    """
    config = mixed(dims)
    tables = jnp.asarray(random_tables(config, seed=7))
    rng = np.random.default_rng(dims)
    eps = 1e-5
    bound = 4 * eps * np.repeat(hg.level_resolutions(config), config.features_per_level) + 1e-5
    for resolution in hg.level_resolutions(config):
        x = rng.uniform(0.0, 1.0, (32, dims))
        axis = rng.integers(0, dims, 32)
        edge = rng.integers(1, resolution, 32) / resolution
        below, above = x.copy(), x.copy()
        below[np.arange(32), axis] = edge - eps
        above[np.arange(32), axis] = edge + eps
        lower = encode_jit(tables, jnp.asarray(below, jnp.float32), config=config)
        upper = encode_jit(tables, jnp.asarray(above, jnp.float32), config=config)
        assert np.all(np.abs(np.asarray(upper - lower)) <= bound), resolution


def test_outside_the_box_is_clamped_onto_it():
    tables = jnp.asarray(random_tables(MIXED))
    x = jnp.array([[-0.5, 0.3], [1.7, 0.3], [0.2, -3.0], [2.0, 2.0]], jnp.float32)
    np.testing.assert_array_equal(
        encode_jit(tables, x, config=MIXED), encode_jit(tables, jnp.clip(x, 0, 1), config=MIXED)
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_dense_and_hashed_levels_agree_without_collisions(dims):
    """A level stored densely and the same level hashed into a table big enough that its
    vertices do not collide give the same encoding once the rows hold the same features."""
    resolutions = (4, 8)
    common = dict(
        levels=2,
        features_per_level=2,
        log2_table_size=20,
        coarsest_resolution=resolutions[0],
        finest_resolution=resolutions[1],
    )
    dense = hg.HashGridConfig(**common)
    hashed = hg.HashGridConfig(**common, dense_coarse_levels=False)
    assert hg.dense_levels(dense, dims) == (True, True)
    assert hg.dense_levels(hashed, dims) == (False, False)
    dense_tables = random_tables(dense, seed=3)
    hashed_tables = np.zeros_like(dense_tables)
    for level, resolution in enumerate(resolutions):
        vertices = list(itertools.product(range(resolution + 1), repeat=dims))
        dense_rows = [ref_row(v, resolution, dense.table_size, True) for v in vertices]
        hashed_rows = [ref_row(v, resolution, dense.table_size, False) for v in vertices]
        assert len(set(hashed_rows)) == len(vertices)  # collision-free at this table size
        hashed_tables[level, hashed_rows] = dense_tables[level, dense_rows]
    xs = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (100, dims)), jnp.float32)
    np.testing.assert_allclose(
        encode_jit(jnp.asarray(hashed_tables), xs, config=hashed),
        encode_jit(jnp.asarray(dense_tables), xs, config=dense),
        rtol=1e-6,
        atol=1e-7,
    )


# ---------------------------------------------------------------------------------------------
# Gradients and transformations.


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_gradient_reaches_exactly_the_rows_read(dims):
    """d/d tables of sum(cotangent * encode) is the float64 scatter-add of weight * cotangent
    into the rows each point read, and zero in every other row."""
    config = mixed(dims)
    rng = np.random.default_rng(dims)
    xs = rng.uniform(0.0, 1.0, (9, dims))
    cotangent = rng.normal(size=(9, config.output_size))
    expected = np.zeros((config.levels, config.table_size, config.features_per_level))
    for n, x in enumerate(xs):
        for level, lookups in enumerate(ref_lookups(x, config)):
            features = cotangent[n].reshape(config.levels, -1)[level]
            for row, weight in lookups:
                expected[level, row] += weight * features
    tables = jnp.asarray(random_tables(config))

    @jax.jit
    def gradient(tables, xs, cotangent):
        return jax.grad(lambda t: jnp.sum(cotangent * hg.encode(t, xs, config=config)))(tables)

    got = np.asarray(
        gradient(tables, jnp.asarray(xs, jnp.float32), jnp.asarray(cotangent, jnp.float32))
    )
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    touched = np.count_nonzero(np.any(got != 0, axis=-1))
    assert 0 < touched <= len(xs) * config.levels * 2**dims


def test_gradient_in_x_matches_float64_finite_differences():
    tables = random_tables(MIXED, seed=5)
    rng = np.random.default_rng(0)
    xs = rng.uniform(0.05, 0.95, (6, 2))
    cotangent = rng.normal(size=(MIXED.output_size,))

    def value(x):
        return jnp.sum(cotangent * hg.encode(jnp.asarray(tables), x, config=MIXED))

    got = jax.jit(jax.vmap(jax.grad(value)))(jnp.asarray(xs, jnp.float32))
    step = 1e-7  # far below the finest cell (1/64): both sides stay in one cell
    expected = np.zeros_like(xs)
    for i in range(2):
        shift = np.zeros(2)
        shift[i] = step
        upper = ref_encode(tables, xs + shift, MIXED) @ cotangent
        lower = ref_encode(tables, xs - shift, MIXED) @ cotangent
        expected[:, i] = (upper - lower) / (2 * step)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_vmap_over_points_and_over_stacked_tables():
    stacked = jnp.stack([jnp.asarray(random_tables(MIXED, seed=s)) for s in range(3)])
    xs = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (3, 5, 2)), jnp.float32)
    batched = jax.jit(jax.vmap(lambda t, x: hg.encode(t, x, config=MIXED)))(stacked, xs)
    per_point = jax.vmap(jax.vmap(lambda t, x: hg.encode(t, x, config=MIXED), (None, 0)))(
        stacked, xs
    )
    for m in range(3):
        expected = ref_encode(stacked[m], xs[m], MIXED)
        np.testing.assert_allclose(batched[m], expected, rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(per_point[m], expected, rtol=1e-5, atol=2e-6)


def test_leading_batch_axes_are_kept():
    tables = jnp.asarray(random_tables(MIXED))
    xs = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (2, 3, 4, 2)), jnp.float32)
    got = encode_jit(tables, xs, config=MIXED)
    assert got.shape == (2, 3, 4, MIXED.output_size)
    np.testing.assert_array_equal(got[1, 2], encode_jit(tables, xs[1, 2], config=MIXED))


# ---------------------------------------------------------------------------------------------
# Initialisation and configuration.


def test_same_seed_same_table_and_uniform_small_values():
    config = hg.HashGridConfig(levels=4, log2_table_size=12, finest_resolution=64)
    first = hg.init_hashgrid(jax.random.key(7), config=config)
    again = hg.init_hashgrid(jax.random.key(7), config=config)
    other = hg.init_hashgrid(jax.random.key(8), config=config)
    assert first.shape == (4, 4096, 2) and first.dtype == jnp.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    values = np.asarray(first)
    assert np.all(np.abs(values) <= 1e-4) and values.std() > 3e-5  # U(-1e-4, 1e-4): std 5.8e-5


def test_to_unit_box_maps_low_to_zero_and_high_to_one():
    x = jnp.array([[-2.0, 10.0], [4.0, 30.0], [1.0, 20.0]])
    got = hg.to_unit_box(x, low=(-2.0, 10.0), high=(4.0, 30.0))
    np.testing.assert_allclose(got, [[0, 0], [1, 1], [0.5, 0.5]])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("levels", 0, "levels must be an integer"),
        ("levels", 2.0, "levels must be an integer"),
        ("features_per_level", 0, "features_per_level"),
        ("log2_table_size", 25, "log2_table_size must be an integer between 1 and 24"),
        ("log2_table_size", True, "log2_table_size"),
        ("coarsest_resolution", 0, "coarsest_resolution"),
        ("finest_resolution", 8, "finest_resolution must be an integer at least 16"),
        ("init_scale", -1.0, "init_scale"),
        ("init_scale", float("nan"), "init_scale"),
        ("dense_coarse_levels", 1, "dense_coarse_levels"),
    ],
)
def test_config_rejects_bad_values_in_one_line(field, value, message):
    with pytest.raises(ValueError, match=message) as error:
        hg.HashGridConfig(**{field: value})
    assert "\n" not in str(error.value)


def test_all_levels_together_stay_within_32_bit_row_indices():
    hg.HashGridConfig(levels=128, log2_table_size=24)  # 2^31 rows: the largest allowed
    with pytest.raises(ValueError, match="exceeds 2\\^31 rows"):
        hg.HashGridConfig(levels=129, log2_table_size=24)


def test_one_level_needs_one_resolution():
    with pytest.raises(ValueError, match="one level has one resolution"):
        hg.HashGridConfig(levels=1, coarsest_resolution=16, finest_resolution=32)


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    config = hg.HashGridConfig(levels=8, log2_table_size=14, finest_resolution=128)
    assert hg.HashGridConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        hg.HashGridConfig.from_dict({**config.to_dict(), "table": 3})


def test_encode_rejects_wrong_tables_and_dimensions():
    config = hg.HashGridConfig(levels=2, log2_table_size=8, finest_resolution=32)
    tables = hg.init_hashgrid(jax.random.key(0), config=config)
    with pytest.raises(ValueError, match=r"tables must have shape \(2, 256, 2\)"):
        hg.encode(tables[:1], jnp.zeros((3, 2)), config=config)
    for dims in (0, len(hg.PRIMES) + 1):
        with pytest.raises(ValueError, match="input dimensions"):
            hg.encode(tables, jnp.zeros((3, dims)), config=config)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_rows_stay_in_the_table_and_weights_sum_to_one_up_to_the_far_corner(dims):
    """A dense level that exactly fills its table ((3 + 1)^2 = 2^4 rows in 2-D) is read only
    inside the table even at x = 1, where the cell past the last vertex must not be read."""
    config = hg.HashGridConfig(
        levels=2,
        features_per_level=1,
        log2_table_size=2 * dims,
        coarsest_resolution=3,
        finest_resolution=9,
    )
    assert hg.dense_levels(config, dims)[0]
    corners = np.array(list(itertools.product((0.0, 1.0), repeat=dims)))
    xs = np.concatenate([corners, np.random.default_rng(0).uniform(0, 1, (50, dims))])
    rows, weights = jax.jit(hg.corner_indices_and_weights, static_argnames="config")(
        jnp.asarray(xs, jnp.float32), config=config
    )
    assert rows.shape == weights.shape == (len(xs), 2, 2**dims)
    rows = np.asarray(rows)
    for level in range(config.levels):  # each level reads only its own T rows
        assert np.all(rows[:, level] >= level * config.table_size)
        assert np.all(rows[:, level] < (level + 1) * config.table_size)
    np.testing.assert_allclose(jnp.sum(weights, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(weights >= 0, True)
