"""Pictures: PNG files, image grids, the training-progress montage GIF and the loss curve.

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
    """Float `[..., 3]` in [0, 1] to uint8 (clipped, rounded; NaN, from a diverged model, as black)."""
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
    """Lay `[N, H, W, 3]` images out in a grid with `pad` pixels between them, `[rows*H', cols*W', 3]`."""
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
    """The smallest integer n such that every n-th pixel of a `[H, W, ...]` frame fits a GIF."""
    return max(1, -(-max(int(shape[0]), int(shape[1])) // GIF_MAX_SIDE))


def save_gif(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    *,
    seconds_per_frame: float = 0.25,
    hold_last: float = 1.5,
) -> Path:
    """Write frames (float `[H, W, 3]`, same size) as a looping GIF, atomically.

    A GIF is at most `GIF_MAX_SIDE` pixels on each side: larger frames are shrunk by the
    integer factor `gif_shrink_factor` gives (every n-th pixel), which the caller may report.
    """
    import imageio.v3 as iio

    if not len(frames):
        raise ValueError("a GIF needs at least one frame")
    step = gif_shrink_factor(np.shape(frames[0]))
    frames = [to_uint8(np.asarray(frame)[::step, ::step]) for frame in frames]
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
    size: tuple[int, int] = (640, 400),
) -> np.ndarray:
    """A plain line chart of one or more series over their index, `[H, W, 3]` float in [0, 1]."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 64, 16, 28, 40
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    values = [np.asarray(v, np.float64) for v in series.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 1.0, high + 1.0
    length = max((len(v) for v in values), default=1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_xy(i, value):
        x = left + (i / max(length - 1, 1)) * plot_w
        y = top + (1.0 - (value - low) / (high - low)) * plot_h
        return x, y

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(120, 120, 120))
    for fraction in np.linspace(0, 1, 5):
        value = low + fraction * (high - low)
        _, y = to_xy(0, value)
        draw.line([left - 4, y, left, y], fill=(120, 120, 120))
        draw.text((4, y - 6), f"{value:.3g}", fill=(60, 60, 60))
    for i in np.unique(np.linspace(0, length - 1, min(length, 6)).round().astype(int)):
        x, _ = to_xy(i, low)
        draw.text((x - 8, top + plot_h + 6), str(i + 1), fill=(60, 60, 60))
    draw.text((left + plot_w // 2 - 20, height - 18), xlabel, fill=(60, 60, 60))
    draw.text((left, 8), title, fill=(20, 20, 20))
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for index, (name, v) in enumerate(zip(series, values)):
        colour = colours[index % len(colours)]
        points = [to_xy(i, value) for i, value in enumerate(v) if np.isfinite(value)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            draw.ellipse(
                [points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2],
                fill=colour,
            )
        draw.text((left + plot_w - 150, top + 6 + 14 * index), name, fill=colour)
    return np.asarray(image, np.float32) / 255.0
