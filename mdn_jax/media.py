"""Pictures: PNG files, image grids, the training-progress montage GIF, the loss curve and the
calibration chart.

Every file is written to a temporary name in the same folder and renamed into place, so a
crash never leaves a half-written image behind; what a killed process leaves is a hidden
temporary file, which `remove_temporaries` clears.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float `[..., 3]` in [0, 1] to uint8 (clipped, rounded; NaN, from a diverged model, as
    black)."""
    pixels = np.nan_to_num(np.asarray(image, np.float32), nan=0.0)
    return np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


# `.<name>.<mkstemp's 8 random characters>.tmp<suffix>`, the temporary name atomic_write uses.
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?")


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call `write(temporary_path)` then rename the result to `path` (same folder, so atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
    )
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        write(temporary)
        with open(
            temporary, "rb+"
        ) as handle:  # on disk before the rename, not only in the page cache
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed `atomic_write` left in `folder`; return what was deleted.

    Only for a folder no other process is writing to: a live write's temporary looks the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if _TEMPORARY_NAME.fullmatch(p.name) and p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def remove_frames_after(folder: str | os.PathLike, epoch: int) -> list[Path]:
    """Delete the montage frames `epoch_NNNNN.png` in `folder` of epochs after `epoch`; return them.

    For a run resumed from an older checkpoint: those frames show a run that was dropped.
    """
    folder = Path(folder)
    frames = sorted(folder.glob("epoch_*.png")) if folder.is_dir() else []
    later = [p for p in frames if p.stem[6:].isdigit() and int(p.stem[6:]) > epoch]
    for path in later:
        path.unlink(missing_ok=True)
    return later


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a float `[H, W, 3]` image in [0, 1] (or uint8) as PNG, atomically."""
    import imageio.v3 as iio

    pixels = image if np.asarray(image).dtype == np.uint8 else to_uint8(image)
    return atomic_write(path, lambda temporary: iio.imwrite(temporary, pixels, extension=".png"))


def grid(
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    columns: int | None = None,
    pad: int = 2,
    background: float = 1.0,
) -> np.ndarray:
    """Lay `[N, H, W, 3]` images out in a grid with `pad` pixels between them,
    `[rows*H', cols*W', 3]`."""
    images = [np.asarray(image, np.float32) for image in images]
    if not images:
        raise ValueError("grid needs at least one image")
    count = len(images)
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = -(-count // columns)
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    canvas = np.full(
        (rows * (height + pad) + pad, columns * (width + pad) + pad, 3), background, np.float32
    )
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        canvas[top : top + image.shape[0], left : left + image.shape[1]] = image[..., :3]
    return canvas


def montage_frame(
    training_images: np.ndarray, render: np.ndarray, *, label: str = ""
) -> np.ndarray:
    """One GIF frame: the training images in a row, the current render beside them.

    A caption strip (e.g. 'epoch 40') is drawn under the images when `label` is given.
    """
    row = grid(list(training_images) + [render], columns=len(training_images) + 1)
    if not label:
        return row
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (row.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, 1), label, fill=(40, 40, 40))
    return np.concatenate([row, np.asarray(strip, np.float32) / 255.0], axis=0)


GIF_MAX_SIDE = 65535  # the GIF format stores width and height in 16 bits


def gif_shrink_factor(shape: Sequence[int]) -> int:
    """The smallest integer n such that a `[H, W, ...]` frame shrunk n-fold fits a GIF."""
    return max(1, -(-max(int(shape[0]), int(shape[1])) // GIF_MAX_SIDE))


def save_gif(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    *,
    seconds_per_frame: float = 0.25,
    hold_last: float = 1.5,
) -> Path:
    """Write frames (float `[H, W, 3]`, same size) as a looping GIF, atomically.

    A GIF is at most `GIF_MAX_SIDE` pixels on each side: larger frames are shrunk (`shrink`,
    resampled) by the integer factor `gif_shrink_factor` gives, which the caller may report.
    """
    import imageio.v3 as iio

    if not len(frames):
        raise ValueError("a GIF needs at least one frame")
    step = gif_shrink_factor(np.shape(frames[0]))
    if step > 1:  # the shape [::step, ::step] would give, resampled instead of dropping pixels
        height, width = (-(-int(n) // step) for n in np.shape(frames[0])[:2])
        frames = [shrink(frame, (height, width)) for frame in frames]
    frames = [to_uint8(np.asarray(frame)) for frame in frames]
    durations = [int(seconds_per_frame * 1000)] * (len(frames) - 1) + [int(hold_last * 1000)]
    if len(frames) == 1:  # Pillow's single-frame GIF writer takes one duration, not a list
        durations = durations[0]
    return atomic_write(
        path,
        lambda temporary: iio.imwrite(
            temporary, np.stack(frames), extension=".gif", duration=durations, loop=0
        ),
    )


def line_chart(
    series: dict[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "",
    size: tuple[int, int] = (640, 400),
) -> np.ndarray:
    """A line chart of one or more series over their index, `[H, W, 3]` float in [0, 1]:
    round ticks, axis labels, a legend (see `mdn_jax.chart`). Pass the held-out curve as a
    second series."""
    from mdn_jax import chart

    return chart.line_chart(series, title=title, xlabel=xlabel, ylabel=ylabel, size=size)


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize `[H, W, 3]` (float in [0, 1] or uint8) down to `size = (height, width)`,
    float `[h, w, 3]`.

    Pillow's Lanczos filter averages every source pixel under its footprint, where taking
    every n-th pixel would alias fine detail and thin lines into noise.
    """
    from PIL import Image

    pixels = np.asarray(image)
    pixels = pixels if pixels.dtype == np.uint8 else to_uint8(pixels)
    height, width = size
    small = Image.fromarray(pixels[..., :3]).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(small, np.float32) / 255.0


_GREY, _INK = (120, 120, 120), (20, 20, 20)
_DIMENSION_COLOURS = [(214, 39, 40), (44, 160, 44), (31, 119, 180), (255, 127, 14)]


def calibration_chart(metrics: dict, *, size: tuple[int, int] = (720, 320)) -> np.ndarray:
    """The PIT histogram and the coverage against the nominal levels, side by side, `[H, W, 3]`.

    `metrics` is `mdn_jax.calibration_metrics`'s dict. Left: PIT bar heights relative to a
    uniform histogram (1 = calibrated; a U shape is over-confident, a hump under-confident).
    Right: each level's observed coverage (per dimension in colour, all together in black)
    against the nominal level, on the diagonal when calibrated.
    """
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    half = width // 2
    _pit_panel(draw, metrics, (48, 28, half - 16, height - 36))
    _coverage_panel(draw, metrics, (half + 48, 28, width - 16, height - 36))
    return np.asarray(image, np.float32) / 255.0


def _pit_panel(draw, metrics: dict, box: tuple[int, int, int, int]) -> None:
    """Bars per bin and dimension, as a multiple of the uniform count; a line at 1."""
    left, top, right, bottom = box
    counts = np.asarray(metrics["pit_histogram"], np.float64)  # [D, bins]
    relative = counts / np.maximum(counts.sum(axis=-1, keepdims=True), 1.0) * counts.shape[-1]
    peak = max(2.0, float(np.nanmax(relative)) if relative.size else 2.0)
    y_of = lambda value: bottom - value / peak * (bottom - top)
    draw.rectangle([left, top, right, bottom], outline=_GREY)
    step = (right - left) / max(counts.shape[-1], 1)
    bar = step / max(counts.shape[0], 1)
    for d, row in enumerate(relative):
        for b, value in enumerate(row):
            x0 = left + b * step + d * bar
            colour = _DIMENSION_COLOURS[d % len(_DIMENSION_COLOURS)]
            draw.rectangle([x0 + 1, y_of(value), x0 + bar - 1, bottom], fill=colour)
    draw.line([left, y_of(1.0), right, y_of(1.0)], fill=_INK, width=1)  # uniform
    for value in (0.0, 1.0, peak):
        draw.text((left - 42, y_of(value) - 6), f"{value:.3g}", fill=_INK)
    draw.text((left, bottom + 6), "0", fill=_INK)
    draw.text((right - 6, bottom + 6), "1", fill=_INK)
    draw.text((left + 40, bottom + 18), "PIT (cdf at the observation)", fill=_INK)
    title = f"PIT histogram, {metrics.get('observations', 0):,} observations"
    draw.text((left, top - 20), title, fill=_INK)


def _coverage_panel(draw, metrics: dict, box: tuple[int, int, int, int]) -> None:
    """Observed against nominal coverage: per dimension in colour, overall in black."""
    left, top, right, bottom = box
    x_of = lambda value: left + value * (right - left)
    y_of = lambda value: bottom - value * (bottom - top)
    draw.rectangle([left, top, right, bottom], outline=_GREY)
    draw.line([x_of(0), y_of(0), x_of(1), y_of(1)], fill=_GREY, width=1)  # calibrated
    for value in (0.0, 0.5, 1.0):
        draw.text((left - 40, y_of(value) - 6), f"{value:g}", fill=_INK)
        draw.text((x_of(value) - 6, bottom + 6), f"{value:g}", fill=_INK)
    for name, observed in metrics.get("coverage_per_dim", {}).items():
        for d, value in enumerate(observed):
            x, y = x_of(float(name)), y_of(value)
            colour = _DIMENSION_COLOURS[d % len(_DIMENSION_COLOURS)]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=colour, width=2)
    for name, value in metrics.get("coverage", {}).items():
        x, y = x_of(float(name)), y_of(value)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=_INK)
        draw.text((x + 8, y - 6), f"{value:.2f}", fill=_INK)
    draw.text((left + 30, bottom + 18), "nominal central-interval level", fill=_INK)
    crps = metrics.get("crps_mean", float("nan"))
    draw.text((left, top - 20), f"coverage; mean CRPS {crps:.4g}", fill=_INK)
