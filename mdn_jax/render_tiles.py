"""The compiled part of rendering: one chunk of pixels as a `lax.map` over fixed-size tiles.

See `mdn_jax.render` (the public front) for why every pixel goes through the same tile
computation, and how chunks are split over several devices.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import backend_tuning, parallel
from mdn_jax import coherent as ch
from mdn_jax import mixture as mx
from mdn_jax import model as mdl


def positions_of(pixel_ids: jax.Array, height, width) -> jax.Array:
    """Row-major pixel indices `[C]` to pixel-centre positions `[C, 2]` in the unit square."""
    rows = pixel_ids // width
    cols = pixel_ids - rows * width
    return jnp.stack([(rows + 0.5) / height, (cols + 0.5) / width], axis=-1).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ModelForward:
    """A split model as the renderer runs it: `(params, positions [C, 2]) -> mixture` with
    batch `[C]`. Any hashable callable of that form renders (`mdn_jax.ensemble_render` passes
    a stacked ensemble); hashable by value, so each model compiles once per (method, chunk)."""

    graphdef: Any

    def __call__(self, params, positions):
        return mdl.apply(self.graphdef, params, positions)


def _tile_values(
    forward,
    params,
    pixel_ids,
    height,
    width,
    key,
    component,
    temperature,
    sigma_temperature,
    *,
    method: str,
    num_samples: int,
    coherent: bool = False,
):
    """Values for one tile of pixel indices `[TILE]`: `[TILE, D]`, `[TILE]` or `[N, TILE, D]`."""
    mixture = forward(params, positions_of(pixel_ids, height, width))  # batch [TILE]
    if method == "mode":
        return mx.most_probable_mean(mixture)
    if method == "mean":
        return mx.mean(mixture)
    if method == "component":
        return mx.select_component(mixture, component)
    if method == "uncertainty":
        return jnp.sqrt(jnp.mean(mx.variance(mixture), axis=-1))
    if method == "components":
        return mx.most_probable_component(mixture)

    def one_sample(sample_key):  # -> [TILE, D]
        if coherent:  # keyed by the sample alone: every pixel of every tile shares the draw
            return ch.coherent_sample(
                sample_key,
                mixture,
                temperature=temperature,
                sigma_temperature=sigma_temperature,
            )
        pixel_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(sample_key, pixel_ids)
        draw = functools.partial(
            mx.sample, temperature=temperature, sigma_temperature=sigma_temperature
        )
        return jax.vmap(draw)(pixel_keys, mixture)

    sample_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(num_samples))
    return jax.vmap(one_sample)(sample_keys)


@functools.partial(
    backend_tuning.tuned_jit,
    static_argnames=("forward", "method", "chunk", "num_samples", "mesh", "coherent"),
)
def render_chunk(
    forward,
    params,
    start,
    height,
    width,
    key,
    component,
    temperature,
    sigma_temperature,
    *,
    method: str,
    chunk: int,
    num_samples: int,
    mesh=None,
    coherent: bool = False,
):
    """Values for pixels `start .. start + chunk`: `[chunk, D]`, `[chunk]` or `[N, chunk, D]`.

    The chunk is computed as a `lax.map` over groups of `TILES_PER_STEP` tiles of `TILE` pixels
    (one tile per step for 'sample' and on a mesh, where grouping changed the rounding of some
    values by an ulp): every pixel goes through the same compiled computation whatever the chunk
    size, so the chunk size cannot change a single bit of the result (XLA's CPU kernels round
    differently for different batch shapes), and grouped tiles give exactly the values of single
    ones. With a `mesh` of S devices the tiles are laid out `[S, chunk / (S * TILE), TILE]`, the
    first axis split over the devices, and each device maps the same tile computation over its
    own.
    """

    def tile_values(ids):
        return _tile_values(
            forward,
            params,
            ids,
            height,
            width,
            key,
            component,
            temperature,
            sigma_temperature,
            method=method,
            num_samples=num_samples,
            coherent=coherent,
        )

    ids = start + jnp.arange(chunk, dtype=jnp.int32)
    values = _map_tiles(tile_values, ids, grouped=mesh is None and method != "sample", mesh=mesh)
    if method == "sample":
        values = jnp.moveaxis(values, 1, 0)  # [N, chunk / TILE, TILE, D]
        return values.reshape((num_samples, chunk) + values.shape[3:])
    return values.reshape((chunk,) + values.shape[2:])


def _map_tiles(tile_values, ids, *, grouped: bool, mesh):
    """`tile_values` of every tile of `ids [chunk]`: `[chunk / TILE, (N,) TILE, ...]`, mapped
    `TILES_PER_STEP` tiles per step where `grouped`, else one, over `mesh`'s devices if any."""
    chunk = ids.shape[0]
    if grouped:
        groups = ids.reshape(chunk // (TILES_PER_STEP * TILE), TILES_PER_STEP, TILE)
        values = jax.lax.map(lambda group: jnp.stack([tile_values(t) for t in group]), groups)
    elif mesh is None:  # draws: grouped, `loc + scale * noise` rounded differently
        return jax.lax.map(tile_values, ids.reshape(chunk // TILE, TILE))
    else:  # one tile per step: grouped, the sharded program rounded 1 ulp differently
        shards = mesh.devices.size
        ids = jax.lax.with_sharding_constraint(
            ids.reshape(shards, chunk // (shards * TILE), TILE), parallel.batch_sharding(mesh)
        )
        values = jax.vmap(lambda own: jax.lax.map(tile_values, own))(ids)
    return values.reshape((chunk // TILE,) + values.shape[2:])


def gather_chunks(run, *, num_chunks: int, chunk: int, lead: tuple[int, ...]) -> np.ndarray:
    """Every chunk's values `run(start=...)` side by side on the host: `lead + [num_chunks *
    chunk, ...]`. One chunk computes while the last is copied out."""
    out = None
    in_flight = None  # (index, device values)
    for index in range(num_chunks + 1):
        current = (index, run(start=index * chunk)) if index < num_chunks else None
        if in_flight is not None:
            done, values = in_flight[0], np.asarray(in_flight[1])
            if out is None:
                out = np.empty(
                    lead + (num_chunks * chunk,) + values.shape[len(lead) + 1 :], values.dtype
                )
            out[(slice(None),) * len(lead) + (slice(done * chunk, (done + 1) * chunk),)] = values
        in_flight = current
    return out


TILE = 4096  # measured on a 2-core CPU: 1024 and 16384 are ~2x slower, 2048 and 8192 ~1.5x
# Tiles per step of the map on one device: independent computations XLA runs side by side. Mode
# render of the reference model at 1024x1024 on the 2-core Xeon: 1.73M px/s one tile at a time,
# 2.07M two at a time, 2.01M four. Every chunk is a whole number of such groups, so each pixel
# still goes through the same compiled computation whatever the chunk size.
TILES_PER_STEP = 2


def chunk_size(pixels_per_chunk: int, total: int, *, shards: int = 1) -> int:
    """Pixels per compiled chunk: the request (at most the image) rounded up to whole tiles,
    the same number on each of `shards` devices.

    The last chunk is padded to the same shape, so each chunk size compiles once.
    """
    chunk = min(pixels_per_chunk, total)
    unit = TILE * (TILES_PER_STEP if shards == 1 else shards)  # see `render_chunk`
    return -(-chunk // unit) * unit
