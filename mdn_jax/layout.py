"""Labelled picture layouts: captioned tiles, image pairs, colour bars and round axis ticks.

Every function takes and returns float `[H, W, 3]` images in [0, 1]. Text is drawn with
Pillow's built-in scalable font at `TEXT_SIZE` pixels (legible when a picture is shown at half
size); small tiles are enlarged by whole-pixel repetition (nearest neighbour, so no colour is
invented) until they are at least `MIN_TILE` pixels wide and their captions fit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

TEXT_SIZE = 16
MIN_TILE = 112
_INK = (30, 30, 30)


@functools.cache
def font(size: int = TEXT_SIZE):
    """Pillow's built-in font at `size` pixels (its bitmap font where FreeType is missing)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_width(text: str, *, size: int = TEXT_SIZE) -> int:
    """Width in pixels of `text` drawn at `size`."""
    left, _, right, _ = font(size).getbbox(text)
    return int(math.ceil(right - left))


def caption(
    text: str, width: int, *, size: int = TEXT_SIZE, ink=_INK, wrap: bool = False
) -> np.ndarray:
    """A white strip `[size * 1.5, width, 3]` with `text` centred in it (left-aligned if long);
    with `wrap`, split at spaces onto as many such lines as the width needs (for titles, which
    must never be cut off; tile labels stay one line so a grid's tiles keep one height)."""
    from PIL import Image, ImageDraw

    lines = wrap_text(text, width - 4, size=size) if wrap else [text]
    line_height = int(round(size * 1.5))
    strip = Image.new("RGB", (width, line_height * len(lines)), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for index, line in enumerate(lines):
        left = max((width - text_width(line, size=size)) // 2, 2)
        y = index * line_height + line_height // 2
        draw.text((left, y), line, fill=ink, font=font(size), anchor="lm")
    return np.asarray(strip, np.float32) / 255.0


def wrap_text(text: str, width: int, *, size: int = TEXT_SIZE) -> list[str]:
    """`text` split at spaces into lines at most `width` pixels wide (a single word wider than
    that keeps a line of its own)."""
    lines = [""]
    for word in text.split(" "):
        joined = f"{lines[-1]} {word}" if lines[-1] else word
        if lines[-1] and text_width(joined, size=size) > width:
            lines.append(word)
        else:
            lines[-1] = joined
    return lines


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Repeat every pixel `factor` x `factor` times: `[H*f, W*f, 3]`."""
    return np.repeat(np.repeat(np.asarray(image, np.float32), factor, axis=0), factor, axis=1)


def labelled_tiles(
    images: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    columns: int | None = None,
    pad: int = 6,
    title: str = "",
) -> np.ndarray:
    """Images `[N][H, W, 3]` (same size) in a grid, each with its label underneath, and an
    optional title line on top. Tiles are enlarged by a whole factor so they are at least
    MIN_TILE pixels wide and as wide as their longest label."""
    if len(images) != len(labels) or not images:
        raise ValueError(
            f"need one label per image, got {len(images)} images, {len(labels)} labels"
        )
    height, width = np.shape(images[0])[:2]
    need = max([MIN_TILE] + [text_width(label) + 8 for label in labels])
    factor = max(1, -(-need // width))
    tiles = [
        np.concatenate([enlarge(image[..., :3], factor), caption(label, width * factor)], axis=0)
        for image, label in zip(images, labels)
    ]
    count = len(tiles)
    columns = min(columns or int(np.ceil(np.sqrt(count))), count)
    rows = -(-count // columns)
    tile_h, tile_w = tiles[0].shape[:2]
    canvas = np.ones((rows * (tile_h + pad) + pad, columns * (tile_w + pad) + pad, 3), np.float32)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        top, left = pad + r * (tile_h + pad), pad + c * (tile_w + pad)
        canvas[top : top + tile_h, left : left + tile_w] = tile
    if title:
        canvas = np.concatenate([caption(title, canvas.shape[1], wrap=True), canvas], axis=0)
    return canvas


def side_by_side(left: np.ndarray, right: np.ndarray, *, gap: int = 2) -> np.ndarray:
    """Two images of one height next to each other with a white gap: `[H, W1 + gap + W2, 3]`."""
    spacer = np.ones((left.shape[0], gap, 3), np.float32)
    return np.concatenate([left[..., :3], spacer, right[..., :3]], axis=1).astype(np.float32)


def pairs_picture(
    images: np.ndarray, others: np.ndarray, labels: Sequence[str], *, title: str = ""
) -> np.ndarray:
    """Each image `[N, H, W, 3]` beside its counterpart in `others`, labelled, one pair a tile."""
    pairs = [side_by_side(a, b) for a, b in zip(images, others)]
    return labelled_tiles(pairs, labels, columns=min(len(pairs), 3), title=title)


MIN_FRAME_WIDTH = 240  # a montage frame is enlarged to at least this width, for its caption


def two_row_frame(
    top: np.ndarray, bottom: np.ndarray, *, label: str = "", note: str = ""
) -> np.ndarray:
    """A montage frame: images `top [N, H, W, 3]` in one row, `bottom` (same shape) under them,
    and a caption strip (e.g. 'epoch 40') when `label` is given, followed by `note` where the
    frame is wide enough. Small images are enlarged (by a factor that depends on their size
    only, so every frame of a run has the same size) until the frame is MIN_FRAME_WIDTH wide."""
    pad = 2
    n, height, width = top.shape[:3]
    factor = max(1, -(-MIN_FRAME_WIDTH // (n * (width + pad) + pad)))
    height, width = height * factor, width * factor
    canvas = np.ones((2 * height + 3 * pad, n * (width + pad) + pad, 3), np.float32)
    for row, images in enumerate((top, bottom)):
        for index, image in enumerate(images):
            y, x = pad + row * (height + pad), pad + index * (width + pad)
            canvas[y : y + height, x : x + width] = enlarge(image[..., :3], factor)
    if not label:
        return canvas
    text = f"{label}: {note}" if note else label
    if text_width(text) + 8 > canvas.shape[1]:
        text = label
    return np.concatenate([canvas, caption(text, canvas.shape[1])], axis=0)


def nice_ticks(low: float, high: float, *, count: int = 5) -> np.ndarray:
    """Round tick values covering [low, high], the first at or below low and the last at or
    above high, 1, 2 or 5 times a power of ten apart: of those steps, the one whose tick count
    is closest to `count` (the finer one on a tie)."""
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        raise ValueError(f"nice_ticks needs finite low < high, got {low}, {high}")
    power = 10.0 ** math.floor(math.log10((high - low) / max(count - 1, 1)))

    def span(step):  # (first, last) tick multiples of step
        return math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)

    steps = [m * power for m in (1, 2, 5, 10, 20)]
    step = min(steps, key=lambda s: abs(span(s)[1] - span(s)[0] + 1 - count))
    first, last = span(step)
    decimals = max(0, 1 - math.floor(math.log10(step)))  # drop float noise: 0.3, not 0.300..04
    return np.round(np.arange(first, last + 1) * step, decimals)


def tick_label(value: float, step: float) -> str:
    """A tick value with just the decimals its step needs (so 0.1, 0.2, 0.3; never 0.30000004)."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def colour_bar(
    ramp, vmax: float, *, height: int, label: str, ticks: int = 6, bar_width: int = 16
) -> np.ndarray:
    """A vertical colour bar `[height, W, 3]` from 0 (bottom) to vmax (top) with round ticks.

    `ramp(values)` maps values `[...]` to colours `[..., 3]` (e.g. `colours.heat_colours` with
    `vmax`); `label` is written above the bar."""
    from PIL import Image, ImageDraw

    values = nice_ticks(0.0, vmax, count=ticks)
    values = values[values <= vmax * (1 + 1e-9)]
    step = float(values[1] - values[0]) if len(values) > 1 else vmax
    texts = [tick_label(v, step) + ("+" if abs(v - vmax) < 1e-9 else "") for v in values]
    top, bottom = int(TEXT_SIZE * 2.2), TEXT_SIZE
    inner = max(height - top - bottom, 8)
    width = max(bar_width + 10 + max(text_width(t) for t in texts), text_width(label) + 8)
    panel = Image.new("RGB", (width, top + inner + bottom), (255, 255, 255))
    levels = np.linspace(vmax, 0.0, inner)  # top row is vmax
    strip = np.repeat(np.asarray(ramp(levels), np.float32)[:, None, :], bar_width, axis=1)
    panel.paste(Image.fromarray(np.round(strip * 255).astype(np.uint8)), (4, top))
    draw = ImageDraw.Draw(panel)
    draw.text((4, TEXT_SIZE // 2), label, fill=_INK, font=font(), anchor="lt")
    for value, text in zip(values, texts):
        y = top + (1.0 - value / vmax) * (inner - 1)
        draw.line([4 + bar_width, y, 8 + bar_width, y], fill=_INK)
        draw.text((10 + bar_width, y), text, fill=_INK, font=font(), anchor="lm")
    return np.asarray(panel, np.float32) / 255.0


def with_colour_bar(image: np.ndarray, bar: np.ndarray) -> np.ndarray:
    """An image with a colour bar to its right, both on a white canvas of the taller height."""
    height = max(image.shape[0], bar.shape[0])
    canvas = np.ones((height, image.shape[1] + 8 + bar.shape[1], 3), np.float32)
    canvas[: image.shape[0], : image.shape[1]] = image[..., :3]
    canvas[: bar.shape[0], image.shape[1] + 8 :] = bar
    return canvas
