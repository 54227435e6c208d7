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
import numpy as np

from mdn_jax import config as cfg
from mdn_jax import guards, parallel
from mdn_jax import model as mdl
from mdn_jax import render_tiles as rt
from mdn_jax.colours import UNCERTAINTY_MAX, component_colours, heat_colours
from mdn_jax.render_tiles import TILE as TILE
from mdn_jax.render_tiles import ModelForward as ModelForward

METHODS = ("mode", "mean", "sample", "component", "uncertainty", "components")
DEFAULT_PIXELS_PER_CHUNK = 65536


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
    return forward_values(
        ModelForward(graphdef),
        params,
        in_features=config.in_features,
        components=config.components,
        height=height,
        width=width,
        method=method,
        component=component,
        key=key,
        num_samples=num_samples,
        temperature=temperature,
        sigma_temperature=sigma_temperature,
        pixels_per_chunk=pixels_per_chunk,
        devices=devices,
        coherent=coherent,
    )


def forward_values(forward, params, *, in_features: int, components: int, **options):
    """`render_values` of any model `forward(params, positions [C, 2]) -> mixture [C]` (a
    hashable callable such as `ModelForward`) with `in_features` inputs and `components`
    components; `options` are `render_values`'s, all of them given."""
    _check(in_features=in_features, components=components, **options)
    return _values(forward, params, **options)


def _values(
    forward,
    params,
    *,
    height,
    width,
    method,
    component,
    key,
    num_samples,
    temperature,
    sigma_temperature,
    pixels_per_chunk,
    devices,
    coherent,
) -> np.ndarray:
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
    chunk = rt.chunk_size(pixels_per_chunk, total, shards=1 if mesh is None else mesh.devices.size)
    num_chunks = -(-total // chunk)
    run = functools.partial(
        rt.render_chunk,
        forward,
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
    out = rt.gather_chunks(run, num_chunks=num_chunks, chunk=chunk, lead=lead)
    if method == "sample":
        return out[:, :total].reshape((num_samples, height, width) + out.shape[2:])
    return out[:total].reshape((height, width) + out.shape[1:])


def render(
    graphdef, params, *, height: int, width: int, method: str = "mode", **options
) -> np.ndarray:
    """An RGB-displayable render: `[H, W, C]` float32, or `[N, H, W, C]` for method 'sample'.

    Colour methods (mode, mean, sample, component) are clipped to [0, 1]; 'uncertainty' and
    'components' are colour-mapped. `options` are those of `render_values`.
    """
    values = render_values(graphdef, params, height=height, width=width, method=method, **options)
    return colour(values, method=method, components=mdl.config_of(graphdef, params).components)


def colour(values: np.ndarray, *, method: str, components: int) -> np.ndarray:
    """`render_values`'s output as `render` shows it, for a model of `components` components."""
    if method == "uncertainty":
        return heat_colours(values, vmax=UNCERTAINTY_MAX)
    if method == "components":
        return component_colours(components)[values]
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _check(*, in_features, components, height, width, method, component, **options):
    if method not in METHODS:
        raise ValueError(f"unknown render method {method!r}; use one of {', '.join(METHODS)}")
    for name, value in (("height", height), ("width", width)):
        cfg.positive_int(name, value)
    for name in ("pixels_per_chunk", "num_samples"):
        cfg.positive_int(name, options[name])
    if height * width >= 2**31:
        raise ValueError(
            f"{height}x{width} has more pixels than this renderer indexes (2^31); render tiles"
        )
    if in_features != 2:
        raise ValueError(
            f"rendering needs a model of (row, column) positions, but this one has "
            f"{in_features} inputs"
        )
    if not 0 <= component < components:
        raise ValueError(
            f"component must be in 0..{components - 1} for this {components}-component "
            f"model, got {component}"
        )
