"""The pictures a finished run writes, each of which may fail without costing the run.

They are written after the checkpoint and metrics.json, so a picture that cannot be made loses
nothing: it is skipped with one line on stderr (`mdn-jax: warning: NAME skipped: reason`) and
its name is returned, for metrics.json (`skipped_pictures`) and the exit code. A montage wider
or taller than a GIF can be (65,535 pixels) is shrunk to fit, with one line. A full disk is not
a picture's problem: it is raised (see `mdn_jax.diskspace`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from mdn_jax import diskspace, media
from mdn_jax import render as rd
from mdn_jax import run_pictures as rp

NAMES = (
    "montage.gif",
    "final_mode.png",
    "reconstructions.png",
    "components.png",
    "samples.png",
    "uncertainty.png",
    "loss.png",
)


def warn(message: str) -> None:
    print(f"mdn-jax: warning: {message}", file=sys.stderr, flush=True)


def _montage(out: Path) -> None:
    import imageio.v3 as iio

    frames = sorted((out / "frames").glob("epoch_*.png"))
    if not frames:
        return
    pixels = [iio.imread(f)[..., :3] / 255.0 for f in frames]
    step = media.gif_shrink_factor(pixels[0].shape)
    if step > 1:
        height, width = pixels[0].shape[:2]
        warn(
            f"montage.gif shrunk {step}x: its frames are {width}x{height} pixels "
            "and a GIF holds at "
            f"most {media.GIF_MAX_SIDE} on a side; the full-size frames are in {out / 'frames'}"
        )
    media.save_gif(out / "montage.gif", pixels)


def makers(
    out: Path,
    images: np.ndarray,
    graphdef,
    params,
    history,
    samples,
    calibration: dict | None = None,
) -> dict[str, Callable[[], object]]:
    """One function per picture (in `NAMES` order, then calibration.png when `calibration`,
    `mdn_jax.calibration_metrics`' dict, is given) that renders and writes it. The labelled
    pictures are `mdn_jax.run_pictures`'."""
    height, width = images.shape[1:3]
    mode = functools.partial(rd.render, graphdef, params, height=height, width=width)
    todo = {
        "montage.gif": lambda: _montage(out),
        "final_mode.png": lambda: media.save_png(out / "final_mode.png", mode(method="mode")),
    }
    todo |= rp.picture_makers(
        out, graphdef, params, images, history, key=jax.random.key(0), num_samples=samples
    )
    if calibration is not None:
        chart = functools.partial(media.calibration_chart, calibration)
        todo["calibration.png"] = lambda: media.save_png(out / "calibration.png", chart())
    return todo


def write_all(
    out: Path,
    images: np.ndarray,
    graphdef,
    params,
    history: list[dict],
    *,
    samples: int,
    calibration: dict | None = None,
) -> list[str]:
    """Write every picture of a finished run into `out`; return the names of those skipped.
    `calibration`: the held-out calibration scores, drawn as calibration.png."""
    return write_each(makers(Path(out), images, graphdef, params, history, samples, calibration))


def write_each(todo: dict[str, Callable[[], object]]) -> list[str]:
    """Call each `{name: make}` in turn; a picture whose `make` fails is skipped with one warning
    line and its name returned (a full disk is raised). Also an ensemble run's
    (`mdn_jax.ensemble_pictures`)."""
    skipped = []
    for name, make in todo.items():
        # Any failure here is one picture's (a decoder limit, degenerate values): training and
        # its scores are already on disk, so report it and go on to the next picture.
        try:
            make()
        except Exception as error:
            if diskspace.is_disk_full(error):
                raise
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            warn(f"{name} skipped: {type(error).__name__}: {reason[:160]}; the run is saved")
            skipped.append(name)
    return skipped
