"""The run folder's labelled pictures of a trained image model, each a float `[H, W, 3]` array.

- `reconstructions_picture`: each training image beside its reconstruction, with its PSNR;
- `reconstruction_frame`: a montage frame, training images over their reconstructions;
- `components_picture`: every component's mean, heaviest (by average weight) first, with its
  index (the `--component K` to render it alone) and average weight under it;
- `uncertainty_picture`: the predictive standard deviation on the fixed scale 0 to
  `colours.UNCERTAINTY_MAX`, with a colour bar;
- `samples_picture`: independent samples in one row, coherent samples under them;
- `loss_picture`: the loss chart, with the held-out curve when there is one;
- `picture_makers` / `write_run_pictures`: all of these (but the montage frame) into a run
  folder.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import colours, layout, media, reconstruct
from mdn_jax import data as dt
from mdn_jax import model as mdl
from mdn_jax import render as rd


def reconstructions_picture(graphdef, params, images: np.ndarray) -> tuple[np.ndarray, list]:
    """Training images `[N, H, W, 3]` beside their reconstructions, labelled with the PSNRs;
    returns the picture and the PSNRs (the coverage PSNRs of `metrics.image_scores`)."""
    pictures, psnrs = reconstruct.reconstructions(graphdef, params, images)
    title = "training image | reconstruction (closest component per pixel), coverage PSNR"
    picture = layout.pairs_picture(
        images, pictures, reconstruct.reconstruction_labels(psnrs), title=title
    )
    return picture, psnrs


def reconstruction_frame(graphdef, params, images: np.ndarray, *, label: str = "") -> np.ndarray:
    """A montage frame: the training images `[N, H, W, 3]` in a row, their current
    reconstructions under them, and a caption (e.g. 'epoch 40')."""
    pictures, _ = reconstruct.reconstructions(graphdef, params, images)
    note = "training images (top), reconstructions (bottom)"
    return layout.two_row_frame(np.asarray(images, np.float32), pictures, label=label, note=note)


@functools.partial(jax.jit, static_argnames="graphdef")
def _weight_sums(graphdef, params, positions):
    """Component weights summed over positions `[C, 2]` (and dimensions, for per_dim): `[K]`."""
    logits = mdl.apply(graphdef, params, positions).logits  # [C, K] or [C, D, K]
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.sum(weights.reshape(-1, weights.shape[-1]), axis=0)  # over all but K


def average_weights(
    graphdef, params, *, height: int, width: int, pixels_per_chunk: int = 65536
) -> np.ndarray:
    """Each component's weight averaged over an image's pixels (per_dim: and dimensions), `[K]`."""
    positions = dt.pixel_grid(height, width)
    total = 0.0
    for start in range(0, len(positions), pixels_per_chunk):
        total = total + _weight_sums(graphdef, params, positions[start : start + pixels_per_chunk])
    total = np.asarray(total, np.float64)
    return total / total.sum()


COMPONENTS_TITLE = "component means, heaviest average weight first (k: the index for --component)"


def components_picture(graphdef, params, *, height: int, width: int) -> np.ndarray:
    """Every component's mean render, heaviest average weight first, labelled 'k 3: 41.2%'."""
    weights = average_weights(graphdef, params, height=height, width=width)
    order = np.argsort(-weights, kind="stable")
    tiles = [
        rd.render(graphdef, params, height=height, width=width, method="component", component=k)
        for k in order
    ]
    labels = [
        f"k {k}: " + (f"{100 * weights[k]:.1f}%" if weights[k] >= 5e-4 else "<0.1%") for k in order
    ]
    return layout.labelled_tiles(tiles, labels, columns=min(len(tiles), 5), title=COMPONENTS_TITLE)


def uncertainty_picture(graphdef, params, *, height: int, width: int) -> np.ndarray:
    """The predictive standard deviation (root mean over channels) on the fixed scale from 0 to
    `colours.UNCERTAINTY_MAX`, enlarged to at least 256 pixels high, with a colour bar."""
    values = rd.render_values(graphdef, params, height=height, width=width, method="uncertainty")
    return uncertainty_layout(values, title="predictive std, fixed scale for every run")


def uncertainty_layout(values: np.ndarray, *, title: str) -> np.ndarray:
    """Standard deviations `[H, W]` as `uncertainty_picture` draws them, under `title`."""
    height = values.shape[0]
    vmax = colours.UNCERTAINTY_MAX
    image = layout.enlarge(colours.heat_colours(values, vmax=vmax), max(1, -(-256 // height)))
    bar = layout.colour_bar(
        lambda v: colours.heat_colours(v, vmax=vmax),
        vmax,
        height=image.shape[0],
        label="std",
    )
    picture = layout.with_colour_bar(image, bar)
    strip = layout.caption(title, picture.shape[1], wrap=True)
    return np.concatenate([strip, picture], axis=0)


def samples_picture(
    graphdef, params, *, height: int, width: int, key: jax.Array, num_samples: int = 4
) -> np.ndarray:
    """`num_samples` independent samples (every pixel its own draw) in the first row and as
    many coherent ones (one draw shared by each sample's pixels) in the second, labelled."""
    options = dict(height=height, width=width, method="sample", key=key, num_samples=num_samples)
    independent = rd.render(graphdef, params, **options)
    coherent = rd.render(graphdef, params, coherent=True, **options)
    labels = [f"independent {i + 1}" for i in range(num_samples)]
    labels += [f"coherent {i + 1}" for i in range(num_samples)]
    return layout.labelled_tiles(
        list(independent) + list(coherent),
        labels,
        columns=num_samples,
        title="samples: independent per pixel (top), coherent (bottom)",
    )


HELD_OUT_KEY = "held_out_nll"  # the history field of the held-out NLL per epoch, when asked for


def loss_picture(history: Sequence[dict], *, ylabel: str = "nats per pixel") -> np.ndarray:
    """The loss chart of a run's history (one dict per epoch with `loss`, and `held_out_nll`
    when a held-out share was scored): round ticks, axis labels, a held-out curve if any."""

    def values(key):
        return [np.nan if h.get(key) is None else float(h[key]) for h in history]

    series = {"training NLL": values("loss")}
    if any(h.get(HELD_OUT_KEY) is not None for h in history):
        series["held-out NLL"] = values(HELD_OUT_KEY)
    return media.line_chart(series, title="loss per epoch", ylabel=ylabel)


def picture_makers(
    out: str | os.PathLike,
    graphdef,
    params,
    images: np.ndarray,
    history: Sequence[dict],
    *,
    key: jax.Array,
    num_samples: int = 4,
) -> dict[str, Callable[[], object]]:
    """One function per labelled picture of a run folder (reconstructions.png, components.png,
    samples.png, uncertainty.png, loss.png) that draws it and writes it atomically; the
    reconstructions' returns their PSNRs. images: the training images `[N, H, W, 3]`."""
    out = Path(out)
    height, width = np.shape(images)[1:3]
    size = dict(height=height, width=width)

    def reconstructions():
        picture, psnrs = reconstructions_picture(graphdef, params, images)
        media.save_png(out / "reconstructions.png", picture)
        return psnrs

    def save(name, draw):
        return lambda: media.save_png(out / name, draw())

    samples = functools.partial(samples_picture, key=key, num_samples=num_samples, **size)
    return {
        "reconstructions.png": reconstructions,
        "components.png": save(
            "components.png", lambda: components_picture(graphdef, params, **size)
        ),
        "samples.png": save("samples.png", lambda: samples(graphdef, params)),
        "uncertainty.png": save(
            "uncertainty.png", lambda: uncertainty_picture(graphdef, params, **size)
        ),
        "loss.png": save("loss.png", lambda: loss_picture(history)),
    }


def write_run_pictures(
    out: str | os.PathLike,
    graphdef,
    params,
    images: np.ndarray,
    history: Sequence[dict],
    *,
    key: jax.Array,
    num_samples: int = 4,
) -> list[float]:
    """Write a run folder's labelled pictures (`picture_makers`), each atomically; returns the
    reconstructions' PSNRs (the coverage PSNRs of `metrics.image_scores`). A run folder writes
    them through `mdn_jax.safe_outputs`, which skips a picture that fails."""
    makers = picture_makers(
        out, graphdef, params, images, history, key=key, num_samples=num_samples
    )
    return [make() for make in makers.values()][0]
