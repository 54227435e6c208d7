"""The training data's boundary checks: the arrays' shapes and values, the batch size.

`mdn_jax.train` re-exports both, so `train.check_arrays` and `train.check_batch_size` keep working.
"""

from __future__ import annotations

import numpy as np


def check_arrays(xs, ys) -> tuple[np.ndarray, np.ndarray]:
    """Validate training arrays at the boundary; return them as float32 numpy."""
    xs = np.asarray(xs, dtype=np.float32)
    ys = np.asarray(ys, dtype=np.float32)
    if xs.ndim == 1:
        xs = xs[:, None]
    if ys.ndim == 1:
        ys = ys[:, None]
    if xs.ndim != 2 or ys.ndim != 2:
        raise ValueError(
            f"xs and ys must be 2-D arrays [N, features], got shapes {xs.shape} and {ys.shape}"
        )
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(
            f"xs and ys must have the same number of rows, got {xs.shape[0]} and {ys.shape[0]}"
        )
    if xs.shape[0] == 0:
        raise ValueError("no training data: xs and ys have 0 rows")
    for name, array in (("xs", xs), ("ys", ys)):
        bad = ~np.isfinite(array)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(
                f"{name} has {int(bad.sum())} NaN or infinite values (first in row {row}); "
                "drop or fill those rows before training"
            )
    return xs, ys


def check_batch_size(batch_size: int, num_samples: int, *, unit: str = "training samples") -> None:
    """Refuse a batch larger than the data, naming the largest that fits."""
    if batch_size > num_samples:
        raise ValueError(
            f"batch size {batch_size} is larger than the {num_samples} {unit}; "
            f"use --batch-size {num_samples} or less"
        )
