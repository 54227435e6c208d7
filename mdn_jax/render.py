"""Render a trained model to an image of any size, in memory-bounded chunks.

The pixel grid is never materialised: each chunk of `pixels_per_chunk` consecutive pixel
indices (row-major) is turned into pixel-centre positions inside one compiled function, on the
same unit-square frame as training (see `mdn_jax.data.pixel_grid`), so a model trained at 128x128
renders at 4096x4096 with the same mapping. Every chunk has the same shape (the last is padded)
so each (method, chunk size) compiles once. Inside a chunk the pixels go through one compiled
tile computation of `TILE` pixels at a time, and random draws are keyed per pixel with
`fold_in(fold_in(key, sample), pixel_index)`, so the chunk size never changes a bit of the result.
With several devices (all local devices by default, `devices=N` for fewer) each chunk's tiles
are split evenly over them, the params replicated on each (see `mdn_jax.parallel`): every
device runs the same tile computation on its own tiles, so the device count does not change
the result either.

Methods (`METHODS`):
  mode         the mean of the most probable component at each pixel (the reference render);
  mean         the mixture mean;
  sample       a random draw per pixel with temperature and sigma_temperature; N samples come
               from one compiled call per chunk (the network runs once, draws are vmapped);
               with `coherent=True` each sample's pixels share one uniform and one normal draw
               (see `mdn_jax.coherent`), so a sample looks like an image, not noise;
  component    the mean of component k at every pixel;
  uncertainty  the predictive standard deviation (root mean over channels of the mixture
               variance), colour-mapped on the fixed scale 0 (dark) to
               `colours.UNCERTAINTY_MAX` = 0.5 (bright), the same for every model;
  components   which component wins at each pixel, one colour per component.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import coherent as ch
from mdn_jax import config as cfg
from mdn_jax import guards, parallel
from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax.colours import UNCERTAINTY_MAX, component_colours, heat_colours

METHODS = ("mode", "mean", "sample", "component", "uncertainty", "components")
DEFAULT_PIXELS_PER_CHUNK = 65536


def _positions(pixel_ids: jax.Array, height, width) -> jax.Array:
    """Row-major pixel indices `[C]` to pixel-centre positions `[C, 2]` in the unit square."""
    rows = pixel_ids // width
    cols = pixel_ids - rows * width
    return jnp.stack([(rows + 0.5) / height, (cols + 0.5) / width], axis=-1).astype(jnp.float32)


def _tile_values(
    graphdef,
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
    mixture = mdl.apply(graphdef, params, _positions(pixel_ids, height, width))  # batch [TILE]
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
    jax.jit, static_argnames=("graphdef", "method", "chunk", "num_samples", "mesh", "coherent")
)
def _render_chunk(
    graphdef,
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

    The chunk is computed as a `lax.map` over tiles of `TILE` pixels: every pixel goes through
    the same compiled tile computation whatever the chunk size, so the chunk size cannot change
    a single bit of the result (XLA's CPU kernels round differently for different batch shapes).
    With a `mesh` of S devices the tiles are laid out `[S, chunk / (S * TILE), TILE]`, the first
    axis split over the devices, and each device maps the same tile computation over its own.
    """

    def tile_values(ids):
        return _tile_values(
            graphdef,
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
    if mesh is None:
        values = jax.lax.map(
            tile_values, ids.reshape(chunk // TILE, TILE)
        )  # [tiles, (N,) TILE, ...]
    else:
        shards = mesh.devices.size
        ids = jax.lax.with_sharding_constraint(
            ids.reshape(shards, chunk // (shards * TILE), TILE), parallel.batch_sharding(mesh)
        )
        values = jax.vmap(lambda own: jax.lax.map(tile_values, own))(
            ids
        )  # [S, tiles / S, (N,) TILE, ...]
        values = values.reshape((chunk // TILE,) + values.shape[2:])  # [tiles, (N,) TILE, ...]
    if method == "sample":
        values = jnp.moveaxis(values, 1, 0)  # [N, chunk / TILE, TILE, D]
        return values.reshape((num_samples, chunk) + values.shape[3:])
    return values.reshape((chunk,) + values.shape[2:])


def render_values(
    graphdef,
    params,
    *,
    height: int,
    width: int,
    method: str = "mode",
    component: int = 0,
    key: jax.Array | None = None,
    num_samples: int = 1,
    temperature: float = 1.0,
    sigma_temperature: float = 1.0,
    pixels_per_chunk: int = DEFAULT_PIXELS_PER_CHUNK,
    devices: int | None = None,
    coherent: bool = False,
) -> np.ndarray:
    """Raw per-pixel values of a render method, computed chunk by chunk.

    `devices`: how many of this process's devices share each chunk (None: all of them).
    `coherent` (method 'sample' only): each sample shares one uniform and one normal draw
    over all its pixels (`mdn_jax.coherent`) instead of drawing every pixel independently.
    Returns `[H, W, D]` (mode, mean, component), `[num_samples, H, W, D]` (sample),
    `[H, W]` float standard deviations (uncertainty) or `[H, W]` int component indices
    (components). Colours are not clipped.
    """
    config: mdl.ModelConfig = mdl.config_of(graphdef, params)
    _check(
        config,
        height=height,
        width=width,
        method=method,
        component=component,
        num_samples=num_samples,
        pixels_per_chunk=pixels_per_chunk,
    )
    guards.check_temperatures(temperature=temperature, sigma_temperature=sigma_temperature)
    if method == "sample" and key is None:
        raise ValueError("method 'sample' needs a random key: pass key=jax.random.key(seed)")
    if coherent and method != "sample":
        raise ValueError(f"coherent applies to method 'sample' only, not {method!r}; drop it")
    key = jax.random.key(0) if key is None else key
    mesh = parallel.local_mesh(devices)
    if mesh.devices.size == 1:
        mesh = None  # the single-device program, without sharding annotations
    else:  # every device gets the params (and key), so each can render its tiles alone
        params, key = jax.device_put((params, key), parallel.replicated(mesh))
    total = height * width
    chunk = _chunk_size(pixels_per_chunk, total, shards=1 if mesh is None else mesh.devices.size)
    num_chunks = -(-total // chunk)
    run = functools.partial(
        _render_chunk,
        graphdef,
        params,
        height=height,
        width=width,
        key=key,
        component=component,
        temperature=temperature,
        sigma_temperature=sigma_temperature,
        method=method,
        chunk=chunk,
        num_samples=num_samples if method == "sample" else 1,
        mesh=mesh,
        coherent=bool(coherent),
    )
    lead = (num_samples,) if method == "sample" else ()
    out = _gather_chunks(run, num_chunks=num_chunks, chunk=chunk, lead=lead)
    if method == "sample":
        return out[:, :total].reshape((num_samples, height, width) + out.shape[2:])
    return out[:total].reshape((height, width) + out.shape[1:])


def _gather_chunks(run, *, num_chunks: int, chunk: int, lead: tuple[int, ...]) -> np.ndarray:
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


def _chunk_size(pixels_per_chunk: int, total: int, *, shards: int = 1) -> int:
    """Pixels per compiled chunk: the request (at most the image) rounded up to whole tiles,
    the same number on each of `shards` devices.

    The last chunk is padded to the same shape, so each chunk size compiles once.
    """
    chunk = min(pixels_per_chunk, total)
    return -(-chunk // (TILE * shards)) * TILE * shards


def render(
    graphdef, params, *, height: int, width: int, method: str = "mode", **options
) -> np.ndarray:
    """An RGB-displayable render: `[H, W, C]` float32, or `[N, H, W, C]` for method 'sample'.

    Colour methods (mode, mean, sample, component) are clipped to [0, 1]; 'uncertainty' and
    'components' are colour-mapped. `options` are those of `render_values`.
    """
    values = render_values(graphdef, params, height=height, width=width, method=method, **options)
    if method == "uncertainty":
        return heat_colours(values, vmax=UNCERTAINTY_MAX)
    if method == "components":
        return component_colours(mdl.config_of(graphdef, params).components)[values]
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _check(
    config: mdl.ModelConfig, *, height, width, method, component, num_samples, pixels_per_chunk
):
    if method not in METHODS:
        raise ValueError(f"unknown render method {method!r}; use one of {', '.join(METHODS)}")
    for name, value in (
        ("height", height),
        ("width", width),
        ("pixels_per_chunk", pixels_per_chunk),
        ("num_samples", num_samples),
    ):
        cfg.positive_int(name, value)
    if height * width >= 2**31:
        raise ValueError(
            f"{height}x{width} has more pixels than this renderer indexes (2^31); render tiles"
        )
    if config.in_features != 2:
        raise ValueError(
            f"rendering needs a model of (row, column) positions, but this one has "
            f"{config.in_features} inputs"
        )
    if not 0 <= component < config.components:
        raise ValueError(
            f"component must be in 0..{config.components - 1} for this {config.components}-component "
            f"model, got {component}"
        )
