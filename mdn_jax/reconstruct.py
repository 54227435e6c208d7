"""Reconstructions: the image a trained mixture holds for each of its training images.

A mixture over colours at every position does not store images; it stores, per pixel, K
candidate colours (the component means). The reconstruction of training image n takes at each
pixel the candidate closest to that image's true colour. It is exactly the quantity behind the
coverage PSNR of `mdn_jax.metrics.image_scores` (the two share `metrics.scan_images`), so the
picture and the number cannot disagree: a high coverage PSNR means every training image can be
read back from the mixture, even where the `mode` render (one heaviest component per pixel)
shows a blend of them.
"""

from __future__ import annotations

import numpy as np

from mdn_jax import metrics


def reconstructions(
    graphdef, params, images: np.ndarray, *, pixels_per_chunk: int = 8192
) -> tuple[np.ndarray, list[float]]:
    """Each training image's reconstruction and its PSNR.

    images: `[N, H, W, 3]` colours in [0, 1]. Returns the reconstructions `[N, H, W, 3]`
    float32 in [0, 1] (per pixel the clipped component mean closest to the image's colour) and
    their PSNRs against the images, one per image in dB: the `coverage_psnr` list that
    `metrics.image_scores` reports, value for value. Computed `pixels_per_chunk` pixels at a
    time (memory: that many pixels of every image times K components).
    """
    scan = metrics.scan_images(graphdef, params, images, pixels_per_chunk=pixels_per_chunk)
    return scan["reconstruction"], metrics.coverage_psnr(scan["closest"])


def reconstruction_labels(psnrs) -> list[str]:
    """Captions for the reconstruction pictures: `['image 1: 36.2 dB', ...]`."""
    return [f"image {index + 1}: {value:.1f} dB" for index, value in enumerate(psnrs)]
