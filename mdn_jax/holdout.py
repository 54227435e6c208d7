"""A held-out share of the training pixels (`--holdout FRACTION`), chosen once by a seed.

The held-out pixels are never trained on and are scored every epoch, so the loss chart can show
whether the mixture generalises between pixels or only memorises them. The split is a seeded
permutation of the row indices of `mdn_jax.image_pairs` (every image's pixels, row-major), so
the same seed and sizes give the same split on any machine, and a resumed run recomputes it.
"""

from __future__ import annotations

import numpy as np


def check_fraction(fraction: float) -> float:
    """`fraction` as a float in [0, 1), or a one-line ValueError."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"--holdout must be a number in [0, 1), got {fraction!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"--holdout must be in [0, 1), got {fraction!r}; 0.1 keeps 10% out")
    return value


def split(count: int, *, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices 0..count-1 into `(train, held_out)`, both sorted int64 arrays.

    `round(fraction * count)` rows are held out (at least one when fraction > 0), chosen by
    a permutation seeded with `seed`; at least one row always stays for training. A fraction
    of 0 holds nothing out.
    """
    fraction = check_fraction(fraction)
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"holdout split needs a positive pixel count, got {count!r}")
    held = int(round(fraction * count))
    held = max(held, 1) if fraction > 0 else 0
    if held >= count:
        raise ValueError(
            f"--holdout {fraction} of {count} pixels leaves none to train on; use a smaller share"
        )
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held:]).astype(np.int64), np.sort(order[:held]).astype(np.int64)


def split_pairs(xs: np.ndarray, ys: np.ndarray, *, fraction: float, seed: int = 0):
    """`(xs, ys, held_out)`: the training pairs `xs [N, 2]`, `ys [N, 3]` without the held-out
    share, and `held_out = (xs, ys)` of the held-out rows (None when `fraction` is 0)."""
    if check_fraction(fraction) == 0.0:
        return xs, ys, None
    train, held = split(len(xs), fraction=fraction, seed=seed)
    return xs[train], ys[train], (xs[held], ys[held])
