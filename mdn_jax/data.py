"""Training data: images to (position, colour) pairs, the built-in demo images, array checks.

Image conventions (all documented in the README):

- Colours are float32 RGB in [0, 1]. 8-bit images are divided by 255, 16-bit by 65535, float
  images are clipped to [0, 1], booleans become 0/1.
- Greyscale (and greyscale + alpha) is repeated into three equal channels.
- Alpha is composited over a white background (transparent pixels become white), since a
  colour with no opacity has no colour to learn.
- EXIF orientation (phone photos: JPEG, and PNG and TIFF that carry it) is applied, so an
  image trains as it is shown, not as its pixels are stored. Signed-integer pixels (some TIFFs)
  are divided by the type's maximum and clipped to [0, 1].
- Palette images are expanded through their palette; CMYK is converted to RGB; multi-frame
  files (GIF, TIFF stacks) use their first frame.
- An image is refused before it is decoded if its header claims more pixels than `max_pixels()`
  (Pillow's decompression-bomb limit): such a file would take gigabytes to decode, and `--size`
  only resizes after decoding, so it must be shrunk before mdn-jax reads it.
- Positions are pixel centres in the unit square, `((row + 0.5) / H, (col + 0.5) / W)`, so a
  model can be rendered at any resolution on the same frame; `IMAGE_INPUT_OFFSET` and
  `IMAGE_INPUT_SCALE` map them to [-1, 1] inside the model (stored in its config).

Reading image files (`load_images`, `load_image`, `DataError` and the size checks) lives in
`mdn_jax.image_files`, which implements the conventions above; its names are re-exported here.
"""

from __future__ import annotations

import numpy as np

# Reading image files lives in mdn_jax.image_files; its names stay importable from here.
from mdn_jax.image_files import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from mdn_jax.image_files import DataError as DataError
from mdn_jax.image_files import check_pixels as check_pixels
from mdn_jax.image_files import check_resize as check_resize
from mdn_jax.image_files import check_size as check_size
from mdn_jax.image_files import find_images as find_images
from mdn_jax.image_files import load_image as load_image
from mdn_jax.image_files import load_images as load_images
from mdn_jax.image_files import max_pixels as max_pixels
from mdn_jax.image_files import printable as printable
from mdn_jax.image_files import resize as resize
from mdn_jax.image_files import to_rgb as to_rgb

IMAGE_INPUT_OFFSET = (0.5, 0.5)
IMAGE_INPUT_SCALE = (0.5, 0.5)


def pixel_grid(height: int, width: int) -> np.ndarray:
    """Pixel-centre positions in the unit square, `[height * width, 2]` float32, row-major."""
    rows = (np.arange(height, dtype=np.float32) + 0.5) / height
    cols = (np.arange(width, dtype=np.float32) + 0.5) / width
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
    return grid.reshape(-1, 2)


def image_pairs(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`[N, H, W, C]` images to training pairs: positions `[N * H * W, 2]`,
    colours `[N * H * W, C]`.

    Every image contributes every position once, so a position appears N times with (usually)
    N different colours: the multi-valued target a mixture is for.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise DataError(f"expected images [N, H, W, C], got shape {images.shape}")
    n, height, width, channels = images.shape
    positions = np.tile(pixel_grid(height, width), (n, 1))
    return positions, images.reshape(n * height * width, channels)


# ---------------------------------------------------------------------------------------------
# Built-in demo images.

_DEMO_OBJECTS = (
    # (shape, colour RGB)
    ("disc", (0.85, 0.15, 0.15)),
    ("square", (0.15, 0.35, 0.85)),
    ("triangle", (0.15, 0.65, 0.25)),
    ("ring", (0.95, 0.70, 0.10)),
    ("cross", (0.55, 0.20, 0.70)),
    ("diamond", (0.10, 0.65, 0.70)),
    ("star", (0.95, 0.45, 0.10)),
    ("bar", (0.30, 0.30, 0.30)),
)


def _shape_mask(shape: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Inside test for a shape centred at 0 with radius ~0.6 on coordinates in [-1, 1]."""
    r = np.hypot(x, y)
    if shape == "disc":
        return r < 0.6
    if shape == "square":
        return (np.abs(x) < 0.5) & (np.abs(y) < 0.5)
    if shape == "triangle":
        return (y < 0.45) & (y > -0.6 + 1.8 * np.abs(x))
    if shape == "ring":
        return (r < 0.65) & (r > 0.35)
    if shape == "cross":
        return ((np.abs(x) < 0.2) & (np.abs(y) < 0.65)) | ((np.abs(y) < 0.2) & (np.abs(x) < 0.65))
    if shape == "diamond":
        return np.abs(x) + np.abs(y) < 0.65
    if shape == "star":
        angle = np.arctan2(y, x)
        return r < 0.35 + 0.25 * np.cos(5 * angle) ** 2
    if shape == "bar":
        return (np.abs(x) < 0.7) & (np.abs(y) < 0.18)
    raise ValueError(shape)


def demo_images(*, count: int = 5, size: int = 128) -> np.ndarray:
    """Deterministic product-photo-like RGB images, `[count, size, size, 3]` float32 in [0, 1].

    Each shows one sharp-edged object of its own shape and colour, shaded top-left to
    bottom-right, with a soft shadow on a light grey background; objects sit at slightly
    different places, so every pixel position has several plausible colours. Edges are
    anti-aliased by 4x supersampling. No randomness, no files.
    """
    if not 1 <= count <= len(_DEMO_OBJECTS):
        raise DataError(f"demo image count must be 1..{len(_DEMO_OBJECTS)}, got {count}")
    if size < 8:
        raise DataError(f"demo image size must be at least 8, got {size}")
    supersample = 4
    n = size * supersample
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    images = []
    for index, (shape, colour) in enumerate(_DEMO_OBJECTS[:count]):
        angle = 2 * np.pi * index / max(count, 1)
        cy, cx = 0.12 * np.sin(angle), 0.12 * np.cos(angle)  # each object a little off centre
        background = 0.93 - 0.06 * (y + 1) / 2  # light backdrop, darker towards the bottom
        image = np.repeat(background[..., None], 3, axis=-1)
        shadow = _shape_mask(shape, y - cy - 0.08, x - cx - 0.08)
        image = np.where(shadow[..., None], image * 0.72, image)
        inside = _shape_mask(shape, y - cy, x - cx)
        shade = 1.1 - 0.25 * ((x - cx) + (y - cy) + 1.2) / 2.4  # light from the top left
        body = np.clip(np.asarray(colour, np.float32) * shade[..., None], 0, 1)
        image = np.where(inside[..., None], body, image)
        image = image.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
        images.append(image)
    return np.clip(np.stack(images), 0.0, 1.0).astype(np.float32)
