"""Image loading (every pixel format the README promises), folders, resizing, training pairs,
demo images."""

import io
import struct
import warnings
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from mdn_jax import data


def _assert_rgb01(image, shape):
    assert image.dtype == np.float32
    assert image.shape == shape
    assert np.all(np.isfinite(image)) and image.min() >= 0.0 and image.max() <= 1.0


# ---------------------------------------------------------------------------------------------
# load_image: pixel formats


def test_load_rgb_png_is_exact_over_255(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "rgb.png", pixels)
    image = data.load_image(tmp_path / "rgb.png")
    _assert_rgb01(image, (5, 7, 3))
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-7)


def test_load_rgba_composites_over_white(tmp_path):
    pixels = np.array(
        [[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128], [10, 200, 30, 0]]], np.uint8
    )
    iio.imwrite(tmp_path / "rgba.png", pixels)
    image = data.load_image(tmp_path / "rgba.png")
    _assert_rgb01(image, (1, 4, 3))
    np.testing.assert_allclose(image[0, 0], [1, 0, 0], atol=1e-7)  # opaque: unchanged
    np.testing.assert_allclose(image[0, 1], [1, 1, 1], atol=1e-7)  # fully transparent black: white
    np.testing.assert_allclose(image[0, 3], [1, 1, 1], atol=1e-7)  # fully transparent colour: white
    alpha = 128 / 255
    np.testing.assert_allclose(
        image[0, 2], [1 - alpha, 1 - alpha, 1.0], atol=1e-6
    )  # half blue over white


def test_load_greyscale_gives_three_equal_channels(tmp_path):
    grey = np.array([[0, 64], [128, 255]], np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    assert Image.open(tmp_path / "l.png").mode == "L"
    image = data.load_image(tmp_path / "l.png")
    _assert_rgb01(image, (2, 2, 3))
    for channel in range(3):
        np.testing.assert_allclose(image[..., channel], grey / 255.0, atol=1e-7)


def test_load_greyscale_alpha_composites_over_white(tmp_path):
    la = np.array([[[100, 255], [100, 0], [0, 51]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    image = data.load_image(tmp_path / "la.png")
    _assert_rgb01(image, (1, 3, 3))
    np.testing.assert_allclose(image[0, 0], [100 / 255] * 3, atol=1e-6)
    np.testing.assert_allclose(image[0, 1], [1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(
        image[0, 2], [1 - 51 / 255] * 3, atol=1e-6
    )  # black at alpha 0.2 over white


def test_load_16_bit_greyscale_divides_by_65535(tmp_path):
    grey = np.array([[0, 1000], [65535, 32768]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    image = data.load_image(tmp_path / "g16.png")
    _assert_rgb01(image, (2, 2, 3))
    np.testing.assert_allclose(
        image[0, 1], [1000 / 65535] * 3, rtol=1e-6
    )  # not 1000/255 clipped to 1
    np.testing.assert_allclose(image[1, 0], [1.0] * 3)
    np.testing.assert_allclose(image[1, 1], [32768 / 65535] * 3, rtol=1e-6)
    assert image[0, 0, 0] == 0.0


def test_load_palette_png_expands_through_palette(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.uint8)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(
        tmp_path / "p.png"
    )
    assert Image.open(tmp_path / "p.png").mode == "P"
    image = data.load_image(tmp_path / "p.png")
    _assert_rgb01(image, (2, 2, 3))
    np.testing.assert_allclose(image, rgb / 255.0, atol=1e-7)


def test_load_cmyk_jpeg_converts_to_rgb(tmp_path):
    colours = np.zeros((16, 16, 3), np.uint8)
    colours[:, :8] = (200, 40, 60)
    colours[:, 8:] = (30, 160, 220)
    Image.fromarray(colours).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    image = data.load_image(tmp_path / "cmyk.jpg")
    _assert_rgb01(image, (16, 16, 3))
    # JPEG is lossy (and chroma is subsampled), so compare away from the colour edge, loosely.
    np.testing.assert_allclose(
        image[4:12, 1:5], np.broadcast_to(colours[0, 0] / 255.0, (8, 4, 3)), atol=0.05
    )
    np.testing.assert_allclose(
        image[4:12, 11:15], np.broadcast_to(colours[0, 15] / 255.0, (8, 4, 3)), atol=0.05
    )


def test_load_multi_frame_gif_uses_first_frame(tmp_path):
    frames = np.stack(
        [np.full((4, 6, 3), colour, np.uint8) for colour in ([255, 0, 0], [0, 0, 255])]
    )
    iio.imwrite(tmp_path / "anim.gif", frames, extension=".gif")
    assert iio.imread(tmp_path / "anim.gif", index=None).shape[0] == 2
    image = data.load_image(tmp_path / "anim.gif")
    _assert_rgb01(image, (4, 6, 3))
    np.testing.assert_allclose(image, np.broadcast_to([1.0, 0.0, 0.0], (4, 6, 3)), atol=1e-6)


def test_to_rgb_float_is_clipped_and_bool_is_0_1():
    floats = np.array([[[-0.5, 0.25, 2.0]]], np.float64)
    np.testing.assert_allclose(data.to_rgb(floats), [[[0.0, 0.25, 1.0]]])
    assert data.to_rgb(floats).dtype == np.float32
    np.testing.assert_array_equal(data.to_rgb(np.array([[True, False]])), [[[1, 1, 1], [0, 0, 0]]])
    with pytest.raises(data.DataError, match="NaN"):
        data.to_rgb(np.array([[[np.nan, 0, 0]]], np.float32))


def _encoded(suffix, **options):
    """A 32x32 photo-like image (smooth plus noise) encoded as `suffix`, as bytes."""
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, 32)
    pixels = np.clip(
        np.stack(
            [ramp[:, None] + 0 * ramp, 0 * ramp[:, None] + ramp, 128 + 0 * ramp[:, None] * ramp], -1
        )
        + rng.normal(0, 20, (32, 32, 3)),
        0,
        255,
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=suffix, **options)
    return buffer.getvalue()


def _damaged_jpeg(where):
    """A JPEG with its frame header (SOF0) zeroed, or 64 bytes of its compressed data replaced."""
    data = bytearray(_encoded("JPEG", quality=90))
    if where == "header":
        start = data.find(b"\xff\xc0")
        data[start + 5 : start + 9] = bytes(4)  # height and width 0
    else:
        middle = len(data) // 2
        data[middle : middle + 64] = b"\xff" * 64
    return bytes(data)


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # imageio probes its legacy plugins on junk
@pytest.mark.parametrize(
    "name, content, words",
    [
        ("missing.png", None, ("no such file",)),
        ("zero.png", b"", ("empty", "0 bytes")),
        ("text.png", b"this is not a picture\n", ("not a readable image", "PNG")),
        (
            "cut.png",
            _encoded("PNG")[:600],
            ("not a readable image", "truncated", "damaged or cut short"),
        ),
        ("header-only.png", _encoded("PNG")[:40], ("not a readable image", "damaged or cut short")),
        (
            "cut.jpg",
            _encoded("JPEG", quality=90)[:700],
            ("not a readable image", "truncated", "damaged or cut short"),
        ),
        (
            "bad-header.jpg",
            _damaged_jpeg("header"),
            ("not a readable image", "damaged or cut short"),
        ),
        ("bad-data.jpg", _damaged_jpeg("data"), ("not a readable image", "damaged or cut short")),
    ],
    ids=[
        "missing",
        "zero-bytes",
        "text",
        "truncated-png",
        "png-header-only",
        "truncated-jpeg",
        "jpeg-bad-header",
        "jpeg-bad-data",
    ],
)
def test_load_image_bad_files_raise_one_line_data_error(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(data.DataError) as error:
        data.load_image(path)
    message = str(error.value)
    assert "\n" not in message and name in message
    for word in words:
        assert word in message


def _png_header(width, height):
    """A PNG that claims `width x height` RGB pixels but holds no pixel data: tiny on disk."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "width, height, words",
    [
        (
            100_000,
            100_000,
            ("10,000,000,000 pixels",),
        ),  # past twice Pillow's limit: Pillow refuses to open it
        (
            10_000,
            10_000,
            ("10000x10000", "100,000,000 pixels"),
        ),  # past the limit: Pillow only warns
    ],
)
def test_huge_image_refused_from_its_header_before_decoding(tmp_path, width, height, words):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(width, height))
    assert path.stat().st_size < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not reach stderr
        with pytest.raises(data.DataError) as error:
            data.load_image(path)
    message = str(error.value)
    assert "\n" not in message and "huge.png" in message and "89,478,485" in message
    assert "shrink the file first" in message and "--size resizes only after decoding" in message
    for word in words:
        assert word in message


def test_pixel_limit_follows_pillow_and_covers_resizing(tmp_path, monkeypatch):
    _write(tmp_path / "small.png", 8, 8)
    _write(tmp_path / "large.png", 12, 12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert data.max_pixels() == 100
    assert data.load_image(tmp_path / "small.png").shape == (8, 8, 3)
    with pytest.raises(
        data.DataError, match=r"large.png: image of 12x12 is 144 pixels, more than the 100"
    ):
        data.load_image(tmp_path / "large.png")
    with pytest.raises(
        data.DataError, match=r"--size 10x11 is 110 pixels.*choose a smaller --size"
    ):
        data.load_images([tmp_path / "small.png"], size=(10, 11))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's way to turn the check off
    assert data.load_image(tmp_path / "large.png").shape == (12, 12, 3)


def test_one_pixel_image_loads(tmp_path):
    _write(tmp_path / "dot.png", 1, 1, (255, 128, 0))
    np.testing.assert_allclose(data.load_images([tmp_path]), [[[[1.0, 128 / 255, 0.0]]]], atol=1e-7)


# ---------------------------------------------------------------------------------------------
# find_images, load_images


def _write(path, height, width, colour=(10, 20, 30)):
    iio.imwrite(path, np.full((height, width, 3), colour, np.uint8))


def test_find_images_skips_junk_and_sorts(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("c.png", "a.jpg", "B.PNG", "b.gif"):
        iio.imwrite(
            folder / name, np.zeros((4, 4, 3), np.uint8), extension=Path(name).suffix.lower()
        )
    (folder / "notes.txt").write_text("junk")
    (folder / "README").write_text("junk")
    (folder / "sub.png").mkdir()  # a folder with an image suffix is not an image
    found = data.find_images([folder])
    assert [p.name for p in found] == sorted(["c.png", "a.jpg", "B.PNG", "b.gif"])
    assert all(p.parent == folder for p in found)
    # inputs keep the order given; a folder expands in place
    extra = tmp_path / "z.png"
    _write(extra, 4, 4)
    assert data.find_images([extra, folder])[0] == extra


def test_find_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="no image files"):
        data.find_images([tmp_path / "empty"])
    with pytest.raises(data.DataError, match="no such file or folder"):
        data.find_images([tmp_path / "nope"])
    with pytest.raises(data.DataError, match="no input images"):
        data.find_images([])


def test_load_images_stacks_same_size(tmp_path):
    _write(tmp_path / "a.png", 3, 5, (255, 0, 0))
    _write(tmp_path / "b.png", 3, 5, (0, 0, 255))
    images = data.load_images([tmp_path])
    _assert_rgb01(images, (2, 3, 5, 3))
    np.testing.assert_allclose(images[0, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(images[1, 2, 4], [0, 0, 1])


def test_load_images_mixed_sizes_refused_naming_size_flag(tmp_path):
    _write(tmp_path / "a.png", 8, 8)
    _write(tmp_path / "b.png", 6, 10)
    with pytest.raises(data.DataError) as error:
        data.load_images([tmp_path])
    message = str(error.value)
    assert "--size" in message and "different sizes" in message and "\n" not in message
    assert "a.png 8x8" in message and "b.png 6x10" in message


def test_load_images_size_resizes_all(tmp_path):
    _write(tmp_path / "a.png", 8, 8, (255, 0, 0))
    _write(tmp_path / "b.png", 6, 10, (0, 128, 255))
    images = data.load_images([tmp_path], size=(4, 7))
    _assert_rgb01(images, (2, 4, 7, 3))
    # resizing a constant image keeps its colour
    np.testing.assert_allclose(images[0], np.broadcast_to([1, 0, 0], (4, 7, 3)), atol=1e-5)
    np.testing.assert_allclose(images[1], np.broadcast_to([0, 128 / 255, 1], (4, 7, 3)), atol=1e-5)
    with pytest.raises(data.DataError, match="positive"):
        data.load_images([tmp_path], size=(0, 5))


# ---------------------------------------------------------------------------------------------
# pixel_grid, image_pairs


def test_pixel_grid_is_row_major_pixel_centres():
    grid = data.pixel_grid(2, 4)
    assert grid.dtype == np.float32 and grid.shape == (8, 2)
    expected = [[(r + 0.5) / 2, (c + 0.5) / 4] for r in range(2) for c in range(4)]
    np.testing.assert_allclose(grid, expected)
    assert grid.min() > 0 and grid.max() < 1


def test_image_pairs_match_pixels():
    rng = np.random.default_rng(1)
    n, height, width = 2, 3, 5
    images = rng.random((n, height, width, 3)).astype(np.float32)
    positions, colours = data.image_pairs(images)
    assert positions.shape == (n * height * width, 2) and colours.shape == (n * height * width, 3)
    assert positions.dtype == np.float32 and colours.dtype == np.float32
    for i in range(n * height * width):
        image, rest = divmod(i, height * width)
        row, col = divmod(rest, width)
        np.testing.assert_allclose(
            positions[i], [(row + 0.5) / height, (col + 0.5) / width], rtol=1e-6
        )
        np.testing.assert_array_equal(colours[i], images[image, row, col])
    # a single [H, W, C] image is treated as N = 1
    single_positions, single_colours = data.image_pairs(images[1])
    np.testing.assert_array_equal(single_colours, images[1].reshape(-1, 3))
    np.testing.assert_array_equal(single_positions, positions[: height * width])
    with pytest.raises(data.DataError):
        data.image_pairs(np.zeros((3, 3)))


# ---------------------------------------------------------------------------------------------
# demo_images


def test_demo_images_deterministic_distinct_in_range():
    images = data.demo_images(count=5)
    _assert_rgb01(images, (5, 128, 128, 3))
    np.testing.assert_array_equal(images, data.demo_images(count=5))
    for i in range(5):
        for j in range(i + 1, 5):
            assert np.abs(images[i] - images[j]).max() > 0.1, (i, j)
    assert data.demo_images(count=1, size=16).shape == (1, 16, 16, 3)


@pytest.mark.parametrize("count", [0, 9, -1])
def test_demo_images_count_out_of_range_refused(count):
    with pytest.raises(data.DataError, match="1..8"):
        data.demo_images(count=count)
