"""Colour maps for pictures of scalar and categorical per-pixel values.

`heat_colours` maps non-negative values (standard deviations) dark-to-bright; a fixed `vmax`
makes pictures of different models comparable. `component_colours` gives component indices
distinct colours.
"""

from __future__ import annotations

import numpy as np

# The fixed top of the uncertainty scale: a colour in [0, 1] has a standard deviation of at most
# 0.5 (half its mass at 0, half at 1), so one scale fits every model and pictures of different
# runs compare directly. Larger (unbounded Gaussian) deviations are shown at the top colour.
UNCERTAINTY_MAX = 0.5

# A perceptually ordered dark-to-bright map (control points of matplotlib's 'magma').
_HEAT = np.array(
    [
        [0.001, 0.000, 0.014],
        [0.231, 0.059, 0.439],
        [0.550, 0.161, 0.506],
        [0.868, 0.288, 0.409],
        [0.994, 0.624, 0.427],
        [0.987, 0.991, 0.750],
    ],
    np.float32,
)
# Distinct colours for component maps (Tableau 10), cycled with darkening past 10.
_PALETTE = np.array(
    [
        [0.122, 0.467, 0.706],
        [1.000, 0.498, 0.055],
        [0.173, 0.627, 0.173],
        [0.839, 0.153, 0.157],
        [0.580, 0.404, 0.741],
        [0.549, 0.337, 0.294],
        [0.890, 0.467, 0.761],
        [0.498, 0.498, 0.498],
        [0.737, 0.741, 0.133],
        [0.090, 0.745, 0.812],
    ],
    np.float32,
)


def heat_colours(values: np.ndarray, *, vmax: float | None = None) -> np.ndarray:
    """Map non-negative values `[...]` to RGB `[..., 3]` on a dark-to-bright scale from 0 to vmax.

    vmax defaults to the largest finite value. NaN (a diverged model) is shown as 0, the
    darkest colour, as `media.to_uint8` shows NaN colours as black; infinity as the brightest."""
    values = np.asarray(values, np.float64)
    if vmax is None:
        vmax = float(np.max(values, where=np.isfinite(values), initial=0.0))
    big = float(np.finfo(np.float32).max)  # +inf: the top of any scale (float64: no overflow)
    values = np.nan_to_num(values, nan=0.0, posinf=big, neginf=0.0)
    vmax = float(vmax)
    t = np.clip(values / vmax, 0.0, 1.0) if vmax > 0 else np.zeros_like(values)
    position = t * (len(_HEAT) - 1)
    low = np.minimum(position.astype(np.int32), len(_HEAT) - 2)
    frac = (position - low)[..., None]
    return (_HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac).astype(np.float32)


def component_colours(count: int) -> np.ndarray:
    """`[count, 3]` distinct RGB colours for component indices."""
    index = np.arange(count)
    shade = 1.0 - 0.3 * ((index // len(_PALETTE)) % 3)
    return (_PALETTE[index % len(_PALETTE)] * shade[:, None]).astype(np.float32)
