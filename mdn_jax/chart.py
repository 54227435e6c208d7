"""A plain line chart (the loss curve) with round ticks, axis labels and a legend.

Drawn with Pillow alone (no plotting library): each series is plotted over its 1-based index
(the epoch); values that are not finite (a skipped or diverged epoch) leave a gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mdn_jax import layout

# Matplotlib's tab10: ten distinguishable series (an ensemble's loss.png has one per member).
_COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
_GREY, _INK = (150, 150, 150), (40, 40, 40)


def _axis_range(values: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
    """Round ticks covering every finite value, and the axis range they span."""
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high - low < 1e-12 * max(1.0, abs(high)):
        low, high = low - 1.0, high + 1.0
    ticks = layout.nice_ticks(low, high, count=5)
    return ticks, float(ticks[0]), float(ticks[-1])


def _finite_runs(values: np.ndarray) -> list[np.ndarray]:
    """Index runs `[[i, i+1, ...], ...]` of consecutive finite values."""
    index = np.flatnonzero(np.isfinite(values))
    return [run for run in np.split(index, np.flatnonzero(np.diff(index) > 1) + 1) if run.size]


def _vertical_text(text: str):
    """`text` rotated to read bottom to top, as a PIL image (a y-axis label)."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (layout.text_width(text) + 4, 20), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 10), text, fill=_INK, font=layout.font(), anchor="lm")
    return strip.rotate(90, expand=True)


def epoch_ticks(length: int) -> np.ndarray:
    """Round ticks for epochs 1..length: whole epochs only (no tick at epoch 1.5)."""
    epochs = layout.nice_ticks(1, max(length, 2), count=6)
    return epochs[(epochs >= 1) & (epochs <= length) & (epochs == np.round(epochs))]


def line_chart(
    series: dict[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "",
    size: tuple[int, int] = (640, 400),
) -> np.ndarray:
    """Line chart of one or more series over their index, `[H, W, 3]` float in [0, 1].

    The y axis runs between round tick values (1, 2 or 5 times a power of ten apart) that
    cover the data; the x axis is numbered from 1 (epochs) at round steps."""
    from PIL import Image, ImageDraw

    width, height = size
    font = layout.font()
    values = [np.asarray(v, np.float64) for v in series.values()]
    ticks, low, high = _axis_range(values)
    step = float(ticks[1] - ticks[0])
    labels = [layout.tick_label(v, step) for v in ticks]
    left = 16 + max(layout.text_width(t) for t in labels) + (24 if ylabel else 0)
    right, top, bottom = 16, 36, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    length = max((len(v) for v in values), default=1)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)

    def to_xy(i, value):  # i: 0-based index
        x = left + (i / max(length - 1, 1)) * plot_w
        return x, top + (1.0 - (value - low) / (high - low)) * plot_h

    for value, text in zip(ticks, labels):
        _, y = to_xy(0, value)
        draw.line([left, y, left + plot_w, y], fill=(232, 232, 232))
        draw.line([left - 5, y, left, y], fill=_GREY)
        draw.text((left - 8, y), text, fill=_INK, font=font, anchor="rm")
    for epoch in epoch_ticks(length):
        x, _ = to_xy(epoch - 1, low)
        draw.line([x, top + plot_h, x, top + plot_h + 5], fill=_GREY)
        draw.text((x, top + plot_h + 8), f"{epoch:g}", fill=_INK, font=font, anchor="mt")
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=_GREY)
    draw.text((left + plot_w / 2, height - 6), xlabel, fill=_INK, font=font, anchor="mb")
    if ylabel:
        vertical = _vertical_text(ylabel)
        image.paste(vertical, (4, int(top + plot_h / 2 - vertical.height / 2)))
    draw.text((left, 10), title, fill=(10, 10, 10), font=font)
    for index, (name, v) in enumerate(zip(series, values)):
        colour = _COLOURS[index % len(_COLOURS)]
        for run in _finite_runs(v):  # a non-finite value breaks the line
            points = [to_xy(i, v[i]) for i in run]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            else:
                (x, y) = points[0]
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        key_x, key_y = left + plot_w - 12 - layout.text_width(name), top + 14 + 20 * index
        draw.line([key_x - 22, key_y, key_x - 4, key_y], colour, 3)  # the legend
        draw.text((key_x, key_y), name, fill=colour, font=font, anchor="lm")
    return np.asarray(image, np.float32) / 255.0
