"""Reading image files: decoding, the pixel conventions, size checks and resizing.

`mdn_jax.data` re-exports every public name here (`load_images`, `DataError`, ...), and its
docstring lists the image conventions these functions implement.
"""

from __future__ import annotations

import os
import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mdn_jax import exif

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class DataError(ValueError):
    """Bad user data; the message is one line naming the problem and the fix."""


def printable(text) -> str:
    """`text` (a path, usually) with control characters escaped as Python writes them (a newline
    as `\\n`), so a message naming it stays one line."""
    return "".join(
        repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in str(text)
    )


def to_rgb(array: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Any imageio pixel array to float32 RGB `[H, W, 3]` in [0, 1] (the conventions in
    `mdn_jax.data`)."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        pixels = array.astype(np.float32)
    elif array.dtype == np.uint8:
        pixels = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        pixels = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        # signed integers (some TIFFs): below 0 is black, as for floats
        pixels = np.clip(array.astype(np.float32) / float(max(info.max, 1)), 0.0, 1.0)
    elif np.issubdtype(array.dtype, np.floating):
        pixels = np.clip(array.astype(np.float32), 0.0, 1.0)
    else:
        raise DataError(
            f"{name}: unsupported pixel type {array.dtype}; save it as an 8- or 16-bit PNG"
        )
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
        raise DataError(
            f"{name}: expected a 2-D image with 1-4 channels, got pixel array of shape "
            f"{array.shape}; save it as a single-frame RGB PNG"
        )
    if not np.all(np.isfinite(pixels)):
        raise DataError(f"{name}: image has NaN or infinite pixels; save it without them")
    channels = pixels.shape[-1]
    if channels in (2, 4):  # composite colour over white using alpha
        alpha = pixels[..., -1:]
        pixels = pixels[..., :-1] * alpha + (1.0 - alpha)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def max_pixels() -> int | None:
    """The most pixels mdn-jax decodes, or renders into, one image; None means no limit.

    This is Pillow's decompression-bomb threshold, `PIL.Image.MAX_IMAGE_PIXELS` (89,478,485 by
    default, about 9459x9459): set that in Python to allow larger images.
    """
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def check_pixels(pixels: int, *, what: str, fix: str) -> None:
    """Refuse more than `max_pixels()` pixels in one image, naming `what` and the `fix`."""
    limit = max_pixels()
    if limit and pixels > limit:
        raise DataError(
            f"{what} is {pixels:,} pixels, more than the {limit:,} mdn-jax handles in one image "
            f"(Pillow's decompression-bomb limit); {fix}"
        )


_SHRINK = (
    "shrink the file first (e.g. to 1024 pixels on its longest side): "
    "--size resizes only after decoding"
)


def _check_header(path: Path) -> None:
    """Refuse an image whose header claims more than `max_pixels()`, before decoding a pixel."""
    from PIL import Image

    with (
        warnings.catch_warnings()
    ):  # Pillow warns between its limit and twice it; we refuse instead
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:  # lazy: reads the header only
                width, height = image.size
            pixels, what = width * height, f"{printable(path)}: image of {width}x{height}"
        except (
            Image.DecompressionBombError
        ) as error:  # over twice the limit: Pillow refuses to open it
            claimed = re.search(r"\((\d+) pixels\)", str(error))
            pixels, what = (
                int(claimed.group(1)) if claimed else max_pixels() + 1,
                f"{printable(path)}: image",
            )
        except Exception:  # not an image Pillow knows: reading decides
            return
    check_pixels(pixels, what=what, fix=_SHRINK)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as float32 RGB `[H, W, 3]` in [0, 1]."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.exists():
        raise DataError(f"{printable(path)}: no such file; check the path")
    if path.is_dir():
        raise DataError(
            f"{printable(path)}: is a folder; "
            "pass image files or use the folder as a training input"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{printable(path)}: file is empty (0 bytes); replace it with a real image")
    _check_header(path)
    try:
        mode = None
        try:
            meta = iio.immeta(path, index=0)
            if str(meta.get("mode", "")).upper() in ("CMYK", "YCBCR", "LAB", "HSV"):
                mode = "RGB"
        except Exception:  # metadata is a hint only; reading decides
            pass
        array = iio.imread(path, index=0, mode=mode) if mode else iio.imread(path, index=0)
    except Exception as error:  # imageio raises many types for undecodable files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{printable(path)}: not a readable image ({reason[:120]}); "
            "it may be damaged or cut short: "
            "replace it with a complete PNG, JPEG, GIF, BMP, TIFF or WebP file"
        ) from None
    return to_rgb(exif.as_shown(array, path), name=printable(path))


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (non-recursively, by image suffix, sorted) into image paths."""
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(
                p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise DataError(
                    f"{printable(item)}: folder has no image files ({', '.join(IMAGE_SUFFIXES)}); "
                    "add images or pass files directly"
                )
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise DataError(f"{printable(item)}: no such file or folder; check the path")
    if not paths:
        raise DataError("no input images given; pass image files or a folder of images")
    return paths


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize `[H, W, 3]` to `size = (height, width)` (antialiased linear, JAX's image.resize)."""
    import jax

    if tuple(image.shape[:2]) == tuple(size):
        return image
    out = jax.image.resize(
        image, (size[0], size[1], image.shape[2]), method="linear", antialias=True
    )
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


def load_images(
    inputs: Iterable[str | os.PathLike], *, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Load images (files or folders) into `[N, H, W, 3]` float32.

    All images must share one size unless `size = (height, width)` asks for a resize.
    """
    if size is not None:
        check_resize(size)
    paths = find_images(inputs)
    images = [load_image(p) for p in paths]
    if size is not None:
        images = [resize(image, size) for image in images]
    shapes = {image.shape[:2] for image in images}
    if len(shapes) > 1:
        listing = ", ".join(f"{p.name} {i.shape[0]}x{i.shape[1]}" for p, i in zip(paths, images))
        raise DataError(
            f"images have different sizes ({listing}); pass --size HxW to resize them all"
        )
    return np.stack(images)


def check_resize(size: Sequence[int]) -> tuple[int, int]:
    """Refuse a `--size` that is not two positive integers or exceeds `max_pixels()`."""
    height, width = check_size(size)
    check_pixels(height * width, what=f"--size {height}x{width}", fix="choose a smaller --size")
    return height, width


def check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in size):
        raise DataError(f"size must be two positive integers (height, width), got {tuple(size)}")
    return int(size[0]), int(size[1])
