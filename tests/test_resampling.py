"""Shrinking pictures with Pillow's resampling (media.shrink) and the report GIFs that use it."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np

from mdn_jax import media, reproduce


def test_shrink_averages_instead_of_dropping_pixels():
    """A one-pixel checkerboard halved: resampling gives even grey, striding keeps one colour."""
    board = (np.indices((16, 16)).sum(axis=0) % 2).astype(np.float32)
    image = np.repeat(board[..., None], 3, axis=-1)
    small = media.shrink(image, (8, 8))
    assert small.shape == (8, 8, 3) and small.dtype == np.float32
    assert np.all(np.abs(small - 0.5) < 0.05), small[..., 0]
    assert np.all(image[::2, ::2] == 0.0)  # what the old [::2, ::2] shrink kept
    uint8 = media.shrink(media.to_uint8(image), (8, 8))
    np.testing.assert_allclose(uint8, small, atol=1 / 255)


def test_report_gif_frames_are_resampled_to_half_size(tmp_path):
    run = tmp_path / "run"
    board = (np.indices((9, 15)).sum(axis=0) % 2 * 255).astype(np.uint8)
    frame = np.repeat(board[..., None], 3, axis=-1)
    for epoch in (1, 2):  # two different frames (Pillow merges identical neighbours)
        media.save_png(run / "frames" / f"epoch_{epoch:05d}.png", frame if epoch == 1 else ~frame)
    media.save_png(run / "final_mode.png", frame)
    reproduce._report_files(run, tmp_path / "files", "x")
    gif = iio.imread(tmp_path / "files" / "x_montage.gif", index=None)
    assert gif.shape[:3] == (2, 5, 8)  # half of 9x15, rounded up as before
    assert np.all(np.abs(gif[..., :3].astype(float) - 127.5) < 40)  # grey, not one colour
