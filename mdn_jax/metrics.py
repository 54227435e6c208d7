"""Scores for image models: likelihood per pixel and the two PSNRs of the design.

- `component_psnr`: for each training image, the best PSNR of any single-component render
  against it (does one component hold a whole image?).
- `coverage_psnr`: for each training image, the PSNR of the per-pixel closest component mean
  (does the mixture cover that image's colours at all?).
Colours are compared in [0, 1] (component means clipped, as a render would show them), so a
PSNR is `10 log10(1 / mse)` in dB.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import data as dt
from mdn_jax import discretised as dz
from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax import structures


def psnr(mse) -> np.ndarray:
    """PSNR in dB for colours in [0, 1]; capped at 100 dB for a perfect match."""
    mse = np.maximum(np.asarray(mse, np.float64), 1e-10)
    return 10.0 * np.log10(1.0 / mse)


@functools.partial(jax.jit, static_argnames="graphdef")
def _chunk_errors(graphdef, params, positions, images):
    """For positions `[C, 2]` and the images' colours there `[N, C, 3]`:

    returns squared errors summed over channels per component `[N, K]` (summed over the
    chunk), the per-pixel closest-component error `[N]` (summed over the chunk), the
    continuous and discretised log-likelihoods of every image's pixels `[N]` (summed over it),
    and the closest component mean itself, the reconstruction, `[N, C, 3]`.
    """
    mixture = mdl.apply(graphdef, params, positions)  # batch [C]
    means = jnp.clip(mx.component_means(mixture), 0.0, 1.0)  # [C, K, D]
    errors = jnp.sum(jnp.square(means[None] - images[:, :, None, :]), axis=-1)  # [N, C, K]
    per_component = jnp.sum(errors, axis=1)  # over pixels: [N, K]
    closest = jnp.sum(jnp.min(errors, axis=-1), axis=1)  # min over K, sum over pixels: [N]
    nearest = jax.nn.one_hot(jnp.argmin(errors, axis=-1), errors.shape[-1], dtype=means.dtype)
    reconstruction = jnp.einsum("nck,ckd->ncd", nearest, means)  # mask, not gather: [N, C, D]
    log_likelihood = jnp.sum(jax.vmap(lambda y: mx.log_prob(mixture, y))(images), axis=1)  # [N]
    log_mass = jnp.sum(
        jax.vmap(lambda y: dz.discretised_log_prob(mixture, y))(images), axis=1
    )  # [N]
    return per_component, closest, log_likelihood, log_mass, reconstruction


def scan_images(graphdef, params, images: np.ndarray, *, pixels_per_chunk: int = 8192) -> dict:
    """One chunked pass of a model over its training images `[N, H, W, 3]`.

    The one place both `image_scores` and `mdn_jax.reconstruct` get their numbers from, so a
    reconstruction's PSNR is the coverage PSNR bit for bit. Memory is bounded by
    `pixels_per_chunk` pixels of every image at a time (times K components). Returns numpy
    arrays: `per_component` and `closest` (mean squared errors per channel, `[N, K]` and `[N]`),
    `log_likelihood` and `log_mass` (summed over each image, `[N]`) and `reconstruction`
    (per pixel the component mean, clipped to [0, 1], closest to the image's colour,
    `[N, H, W, 3]`).
    """
    images = np.asarray(images, np.float32)
    n, height, width, channels = images.shape
    positions = dt.pixel_grid(height, width)
    colours = images.reshape(n, height * width, channels)
    per_component = closest = log_likelihood = log_mass = 0.0
    reconstruction = np.empty_like(colours)
    for start in range(0, height * width, pixels_per_chunk):
        stop = start + pixels_per_chunk
        a, b, c, d, e = _chunk_errors(
            graphdef, params, positions[start:stop], colours[:, start:stop]
        )
        per_component, closest = per_component + a, closest + b
        log_likelihood, log_mass = log_likelihood + c, log_mass + d
        reconstruction[:, start:stop] = np.asarray(e)
    count = height * width * channels
    return {
        "per_component": np.asarray(per_component) / count,
        "closest": np.asarray(closest) / count,
        "log_likelihood": np.asarray(log_likelihood),
        "log_mass": np.asarray(log_mass),
        "reconstruction": reconstruction.reshape(images.shape),
    }


def coverage_psnr(closest) -> list[float]:
    """The coverage PSNRs as reported, one per image, in dB (rounded to 3 decimals)."""
    return [round(float(v), 3) for v in psnr(closest)]


def image_scores(graphdef, params, images: np.ndarray, *, pixels_per_chunk: int = 8192) -> dict:
    """Scores of a model against its training images `[N, H, W, 3]`.

    Returns a dict with `nll_nats` (mean negative log-likelihood per pixel, all channels
    together), `bits_per_channel` (the discretised 8-bit likelihood, see
    `mdn_jax.discretised`), `component_psnr` and `coverage_psnr` (lists, one value per image,
    in dB) and
    `best_component` (the component index behind each component PSNR).
    """
    n, height, width, channels = np.shape(images)
    scan = scan_images(graphdef, params, images, pixels_per_chunk=pixels_per_chunk)
    per_component = scan["per_component"]
    return {
        "nll_nats": float(-np.sum(scan["log_likelihood"]) / (n * height * width)),
        "bits_per_channel": float(
            -np.sum(scan["log_mass"]) / (n * height * width * channels * np.log(2.0))
        ),
        "component_psnr": [round(float(v), 3) for v in psnr(per_component.min(axis=1))],
        "coverage_psnr": coverage_psnr(scan["closest"]),
        "best_component": [int(k) for k in per_component.argmin(axis=1)],
    }


def collapse_diagnostics(
    mixture: mx.Mixture, *, scale_floor: float, floor_tolerance: float = 1e-3
) -> dict:
    """Signs of mixture collapse over a batch of inputs (mixture batch `[B]`).

    - `effective_components`: exp of the entropy of the average weights, in [1, K]: K when all
      components are used equally on average, 1 when one takes everything.
    - `unused_components`: how many components are the most probable one at no input.
    - `scales_at_floor`: fraction of standard deviations (Cholesky diagonals) within
      `floor_tolerance` (relative) of the scale floor: sigmas that collapsed onto the floor
      (every value the head floors; see `Structure.floored_scales`).
    For per_dim mixtures weights are averaged over dimensions too.
    """
    weights = jax.nn.softmax(mixture.logits, axis=-1)
    average = jnp.mean(weights.reshape(-1, weights.shape[-1]), axis=0)  # [K]
    entropy = -jnp.sum(
        jnp.where(average > 0, average * jnp.log(jnp.where(average > 0, average, 1.0)), 0.0)
    )
    winners = mx.most_probable_component(mixture).reshape(-1)
    used = jnp.zeros(weights.shape[-1], bool).at[winners].set(True)
    scales = structures.of(mixture).floored_scales(mixture)
    at_floor = jnp.mean(scales <= scale_floor * (1.0 + floor_tolerance))
    return {
        "effective_components": round(float(jnp.exp(entropy)), 4),
        "unused_components": int(weights.shape[-1] - jnp.sum(used)),
        "scales_at_floor": round(float(at_floor), 4),
    }
