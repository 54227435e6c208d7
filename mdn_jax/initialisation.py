"""Starting values taken from the data, in numpy, for a `ModelConfig` before the model is built.

- `normalisation_from_data(xs)`: `input_offset` and `input_scale` from the inputs.
- `spread_means(ys, K)`: `mean_init`, K component means spread over the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPREAD_SUBSAMPLE = 20_000  # farthest-point sampling is O(N K): bound N


def spread_means(ys, components: int, *, seed: int = 0) -> tuple[tuple[float, ...], ...]:
    """K outputs spread over the data `ys [N, D]`, for `ModelConfig.mean_init`.

    Farthest-point sampling: start from the output nearest the data mean, then repeatedly take
    the output farthest from all chosen so far (over a seeded subsample of at most 20,000
    rows), so the K means cover the range of the data, corners included. Duplicates (data with
    fewer than K distinct outputs) are allowed.
    """
    ys = np.asarray(ys, np.float64)
    if ys.ndim != 2 or not len(ys) or not np.all(np.isfinite(ys)):
        raise ValueError("spread_means needs finite outputs shaped [N, D] with N >= 1")
    if len(ys) > SPREAD_SUBSAMPLE:
        ys = ys[np.random.default_rng(seed).choice(len(ys), SPREAD_SUBSAMPLE, replace=False)]
    chosen = [int(np.argmin(np.sum((ys - ys.mean(axis=0)) ** 2, axis=1)))]
    distance = np.sum((ys - ys[chosen[0]]) ** 2, axis=1)  # [N] to the nearest chosen so far
    for _ in range(components - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.sum((ys - ys[chosen[-1]]) ** 2, axis=1))
    return tuple(tuple(float(v) for v in ys[i]) for i in chosen)


def normalisation_from_data(xs: Sequence) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and standard deviation of `xs [N, in]` (std 1 where a feature is
    constant)."""
    xs = np.asarray(xs, np.float64)
    std = xs.std(axis=0)  # over the samples, axis 0
    std = np.where(std > 0, std, 1.0)
    return tuple(xs.mean(axis=0).tolist()), tuple(std.tolist())
