"""EXIF orientation: phone photos store their pixels as the sensor read them and say, in an EXIF
tag, how to turn them for display. JPEG, PNG (eXIf chunk) and TIFF can carry it; Pillow reads
it from all three. mdn_jax trains on the image as shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# EXIF orientation tag values 2..8 as numpy operations on `[H, W, ...]`, the same as Pillow's
# `ImageOps.exif_transpose` (tests/test_operations.py compares them).
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: a.swapaxes(0, 1)[::-1],
}


def orientation(path: Path) -> int:
    """The EXIF orientation tag (1..8) of an image file; 1 (as stored) when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            value = image.getexif().get(0x0112, 1)
    except Exception:  # no EXIF Pillow can read: as stored
        return 1
    return value if isinstance(value, int) and value in _ORIENTATIONS else 1


def oriented(array: np.ndarray, tag: int) -> np.ndarray:
    """`array [H, W, ...]` turned as the EXIF orientation `tag` (1..8) says."""
    if tag not in _ORIENTATIONS or np.ndim(array) < 2:
        return array
    return np.ascontiguousarray(_ORIENTATIONS[tag](np.asarray(array)))


def as_shown(array: np.ndarray, path: Path) -> np.ndarray:
    """The decoded pixels `array [H, W, ...]` of the file `path`, turned as its EXIF tag says."""
    return oriented(array, orientation(path))
