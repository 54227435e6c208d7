"""Reconstructions: the closest component mean per pixel, scoring exactly the coverage PSNR."""

import numpy as np
import pytest

import mdn_jax
from mdn_jax import data, metrics, model, reconstruct

SIZE = 13  # odd, so chunks never divide the image evenly


@pytest.fixture(scope="module", params=model.STRUCTURES)
def trained(request):
    images = data.demo_images(count=3, size=SIZE)
    xs, ys = data.image_pairs(images)
    config = model.ModelConfig(
        hidden=(16, 16),
        components=3,
        structure=request.param,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    result = mdn_jax.fit(
        xs, ys, model_config=config, train_config=mdn_jax.TrainConfig(epochs=3, batch_size=32)
    )
    return result.graphdef, result.params, images


def test_reconstructions_score_exactly_the_coverage_psnr(trained):
    graphdef, params, images = trained
    pictures, psnrs = reconstruct.reconstructions(graphdef, params, images, pixels_per_chunk=50)
    scores = metrics.image_scores(graphdef, params, images, pixels_per_chunk=50)
    assert psnrs == scores["coverage_psnr"]  # the number metrics.json reports, exactly
    assert pictures.shape == images.shape and pictures.dtype == np.float32
    # and the pictures really score that: an independent float64 PSNR of picture vs image
    mse = np.mean((pictures.astype(np.float64) - images.astype(np.float64)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(10 * np.log10(1 / mse), psnrs, atol=2e-3)


def test_reconstruction_is_the_closest_clipped_component_mean(trained):
    graphdef, params, images = trained
    pictures, _ = reconstruct.reconstructions(graphdef, params, images)
    chunked, _ = reconstruct.reconstructions(graphdef, params, images, pixels_per_chunk=7)
    np.testing.assert_allclose(pictures, chunked, rtol=1e-6, atol=1e-7)
    mixture = model.apply(graphdef, params, data.pixel_grid(SIZE, SIZE))
    means = np.clip(np.asarray(mdn_jax.component_means(mixture), np.float64), 0, 1)  # [P, K, D]
    colours = images.reshape(len(images), -1, 1, 3).astype(np.float64)
    errors = np.sum((means[None] - colours) ** 2, axis=-1)  # [N, P, K]
    best = np.take_along_axis(means[None], errors.argmin(-1)[..., None, None], axis=2)[:, :, 0]
    got = pictures.reshape(len(images), -1, 3)
    # a pixel may differ only where two components are (nearly) tied for closest
    gap = np.sort(errors, axis=-1)
    tied = (gap[..., 1] - gap[..., 0]) < 1e-5
    close = np.all(np.abs(got - best) < 1e-5, axis=-1)
    assert np.all(close | tied) and close.mean() > 0.99


def test_reconstruction_labels():
    assert reconstruct.reconstruction_labels([36.214, 9.0]) == [
        "image 1: 36.2 dB",
        "image 2: 9.0 dB",
    ]
