"""Real photographs: the hash grid draws them sharper than raw positions, in the same steps.

A quick version of benchmarks/photo_fidelity.py (five photos at 128x128, README: Input
encodings): two photos that scikit-image ships, centre-cropped and shrunk to 32x32, trained
as one multi-image task with the CLI's image defaults for each encoding
(`mdn_jax.image_defaults`) and the same batches and epochs, then scored per photo with
`metrics.image_scores` (NLL, bits per channel, coverage PSNR). A hash grid that does not
interpolate, does not train, or reads the wrong rows draws a blurry or blocky image, and loses
the margin asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest

from mdn_jax import data, image_defaults, metrics, runs
from mdn_jax import train as tr

skimage_data = pytest.importorskip("skimage.data")
skimage_transform = pytest.importorskip("skimage.transform")

PHOTOS = ("astronaut", "coffee")
SIZE = 32
EPOCHS = 25
BATCH = 256


def photos(size: int = SIZE) -> np.ndarray:
    """The photos `[n, size, size, 3]`, centre squares resized with antialiasing, 8-bit."""
    out = []
    for name in PHOTOS:
        image = getattr(skimage_data, name)()[..., :3].astype(np.float64) / 255.0
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        square = image[top : top + side, left : left + side]
        small = skimage_transform.resize(square, (size, size), anti_aliasing=True)
        out.append(np.round(np.clip(small, 0.0, 1.0) * 255.0) / 255.0)
    return np.stack(out).astype(np.float32)


def _train(images: np.ndarray, encoding: str) -> dict:
    """Scores after EPOCHS epochs with the CLI's image defaults for `encoding`."""
    defaults = image_defaults.HASHGRID if encoding == "hashgrid" else image_defaults.REFERENCE
    model = dict(components=4, hidden=defaults["hidden"], encoding=encoding)
    if encoding == "hashgrid":  # a grid sized for 32x32 photos, so the test stays quick
        model.update(hashgrid_log2_table=12, hashgrid_min_res=4, hashgrid_max_res=32)
    if defaults["init"] == "spread":
        model.update(runs.spread_init(images, model["components"]))
    train_config = tr.TrainConfig(
        epochs=EPOCHS,
        batch_size=BATCH,
        learning_rate=defaults["lr"],
        schedule=defaults["schedule"],
        adam_b2=defaults["adam_b2"],
        adam_eps=defaults["adam_eps"],
    )
    xs, ys = data.image_pairs(images)
    config = runs.image_model_config(**model)
    result = tr.fit(xs, ys, model_config=config, train_config=train_config, normalise_inputs=False)
    return metrics.image_scores(result.graphdef, result.params, images)


@pytest.fixture(scope="module")
def scores():
    images = photos()
    return {encoding: _train(images, encoding) for encoding in ("identity", "hashgrid")}


def test_photos_are_real_8_bit_pictures():
    images = photos()
    assert images.shape == (len(PHOTOS), SIZE, SIZE, 3)
    assert np.allclose(images * 255, np.round(images * 255), atol=1e-4)
    assert all(image.std() > 0.1 for image in images)  # not flat


def test_hashgrid_draws_every_photo_sharper_than_raw_positions(scores):
    identity, hashgrid = scores["identity"]["coverage_psnr"], scores["hashgrid"]["coverage_psnr"]
    assert len(identity) == len(hashgrid) == len(PHOTOS)
    for raw, grid in zip(identity, hashgrid):
        assert grid > raw + 4.0, (identity, hashgrid)


def test_hashgrid_is_the_better_density_too(scores):
    identity, hashgrid = scores["identity"], scores["hashgrid"]
    assert hashgrid["nll_nats"] < identity["nll_nats"] - 1.0, (identity, hashgrid)
    assert 0 < hashgrid["bits_per_channel"] < identity["bits_per_channel"] <= 8.0
