"""Coherent sampling: exact per-pixel marginals, shared draws, smoother images than independent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import mdn_jax
from mdn_jax import coherent, data, model, render

DRAWS = 20_000
PIXELS = 3


def _mixture(structure, seed=0, k=3, d=2):
    """A random mixture over PIXELS pixels with well separated, unequal components."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(PIXELS, k)) * 1.5
    if structure == "per_dim":
        means = rng.normal(size=(PIXELS, d, k)) * 3
        scales = rng.uniform(0.3, 1.5, size=(PIXELS, d, k))
        return mdn_jax.per_dim(rng.normal(size=(PIXELS, d, k)) * 1.5, means, scales)
    means = rng.normal(size=(PIXELS, k, d)) * 3
    if structure == "joint":
        return mdn_jax.joint(logits, means, rng.uniform(0.3, 1.5, size=(PIXELS, k, d)))
    tril = np.tril(rng.normal(size=(PIXELS, k, d, d)) * 0.5)
    index = np.arange(d)
    tril[..., index, index] = rng.uniform(0.3, 1.5, size=(PIXELS, k, d))
    return mdn_jax.full(logits, means, tril)


def _reference(mixture, temperature, sigma_temperature):
    """Independent float64 per-dimension marginals: weights, means, std devs `[P, D, K]`."""
    logits = np.asarray(mixture.logits, np.float64) / temperature
    weights = np.exp(logits - special.logsumexp(logits, axis=-1, keepdims=True))
    if isinstance(mixture, mdn_jax.PerDimMixture):
        means, stds = np.asarray(mixture.means, np.float64), np.asarray(mixture.scales, np.float64)
    else:
        means = np.swapaxes(np.asarray(mixture.means, np.float64), -1, -2)  # [P, D, K]
        if isinstance(mixture, mdn_jax.FullMixture):
            tril = np.asarray(mixture.scale_tril, np.float64)
            stds = np.swapaxes(np.sqrt(np.sum(tril**2, axis=-1)), -1, -2)  # sqrt diag(L L^T)
        else:
            stds = np.swapaxes(np.asarray(mixture.scales, np.float64), -1, -2)
        weights = np.broadcast_to(weights[:, None, :], means.shape)
    return weights, means, stds * sigma_temperature


@pytest.mark.parametrize("structure", ["joint", "per_dim", "full"])
@pytest.mark.parametrize("temperature, sigma_temperature", [(1.0, 1.0), (0.5, 0.7)])
def test_every_pixel_has_the_mixtures_marginal(structure, temperature, sigma_temperature):
    """Monte Carlo over DRAWS shared (u, z): per pixel and dimension, the sample mean and variance
    are within 5 standard errors of the tempered mixture's, and a KS test against its CDF
    passes at p > 1e-4 (18 tests per structure and temperature)."""
    mixture = _mixture(structure)
    draw = jax.jit(
        lambda key: coherent.coherent_sample(
            key,
            mixture,
            sample_shape=(DRAWS,),
            temperature=temperature,
            sigma_temperature=sigma_temperature,
        )
    )
    samples = np.asarray(draw(jax.random.key(1)), np.float64)  # [DRAWS, P, D]
    weights, means, stds = _reference(mixture, temperature, sigma_temperature)
    mean = np.sum(weights * means, axis=-1)  # [P, D]
    variance = np.sum(weights * (stds**2 + (means - mean[..., None]) ** 2), axis=-1)
    standard_error = np.sqrt(variance / DRAWS)
    assert np.all(np.abs(samples.mean(axis=0) - mean) < 5 * standard_error)
    # the variance estimate's standard error, from the fourth central moment
    centred = samples - mean
    variance_error = np.sqrt(np.var(centred**2, axis=0) / DRAWS)
    assert np.all(np.abs(np.mean(centred**2, axis=0) - variance) < 5 * variance_error)
    for p in range(PIXELS):
        for d in range(samples.shape[-1]):

            def cdf(y, p=p, d=d):
                z = (np.asarray(y)[:, None] - means[p, d]) / stds[p, d]
                return np.sum(weights[p, d] * stats.norm.cdf(z), axis=-1)

            assert stats.kstest(samples[:, p, d], cdf).pvalue > 1e-4


@pytest.mark.parametrize("structure", ["joint", "per_dim", "full"])
def test_temperature_zero_gives_the_heaviest_component(structure):
    mixture = _mixture(structure, seed=3)
    got = coherent.coherent_sample(
        jax.random.key(0), mixture, sample_shape=(4,), temperature=0.0, sigma_temperature=0.0
    )
    # mdn_jax.sample at temperature 0 is the heaviest component (per dimension for per_dim)
    expected = mdn_jax.sample(jax.random.key(5), mixture, temperature=0.0, sigma_temperature=0.0)
    np.testing.assert_allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-6)
    if structure != "per_dim":
        np.testing.assert_allclose(got[0], mdn_jax.most_probable_mean(mixture), rtol=1e-6)


def test_inverse_cdf_follows_the_fixed_component_order():
    logits = jnp.log(jnp.array([0.2, 0.0, 0.5, 0.3]))  # component 1 has weight exactly 0
    picks = [
        int(jnp.argmax(coherent.inverse_cdf_one_hot(logits, u)))
        for u in (0.0, 0.1, 0.2, 0.3, 0.69, 0.7, 0.75, 0.999999)
    ]
    assert picks == [0, 0, 2, 2, 2, 3, 3, 3]
    # the last component of zero weight is never picked, even at u just below 1
    tail = jnp.log(jnp.array([0.5, 0.5, 0.0]))
    assert int(jnp.argmax(coherent.inverse_cdf_one_hot(tail, 1.0 - 1e-7))) == 1


@pytest.mark.parametrize("structure", ["joint", "per_dim", "full"])
def test_pixels_share_the_draw_under_jit_and_vmap(structure):
    mixture = _mixture(structure, seed=1)
    twin = jax.tree.map(lambda a: jnp.concatenate([a[:1], a[:1]]), mixture)  # two equal pixels
    assert mdn_jax.coherent_sample is coherent.coherent_sample  # the public name
    keys = jax.random.split(jax.random.key(2), 5)
    draws = jax.jit(jax.vmap(lambda key: coherent.coherent_sample(key, twin)))(keys)  # [5, 2, D]
    np.testing.assert_array_equal(draws[:, 0], draws[:, 1])
    for index, key in enumerate(keys):  # vmap changes nothing
        np.testing.assert_allclose(
            draws[index], coherent.coherent_sample(key, twin), rtol=1e-5, atol=1e-6
        )
    # explicit draws: u and z picked by hand give the inverse-CDF component's mean + scale z
    u, z = jnp.array(0.0), jnp.zeros(mdn_jax.event_size(mixture))
    first = coherent.coherent_draw(mixture, u, z)  # u = 0: component 0 everywhere (no 0 weight)
    np.testing.assert_allclose(first, mdn_jax.select_component(mixture, 0), rtol=1e-6)


HEIGHT, WIDTH = 24, 24


@pytest.fixture(scope="module")
def demo_model():
    """A model trained briefly on three small built-in demo images."""
    images = data.demo_images(count=3, size=HEIGHT)
    xs, ys = data.image_pairs(images)
    config = model.ModelConfig(
        hidden=(32, 32),
        components=4,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    result = mdn_jax.fit(
        xs, ys, model_config=config, train_config=mdn_jax.TrainConfig(epochs=8, batch_size=64)
    )
    return result.graphdef, result.params


def _roughness(samples):
    """Mean absolute difference between horizontally and vertically neighbouring pixels."""
    return (
        float(
            np.mean(np.abs(np.diff(samples, axis=-2))) + np.mean(np.abs(np.diff(samples, axis=-3)))
        )
        / 2
    )


def test_coherent_samples_are_smoother_than_independent_ones(demo_model):
    graphdef, params = demo_model
    options = dict(height=HEIGHT, width=WIDTH, method="sample", num_samples=8)
    independent = render.render(graphdef, params, key=jax.random.key(0), **options)
    smooth = render.render(graphdef, params, key=jax.random.key(0), coherent=True, **options)
    assert _roughness(smooth) * 2 <= _roughness(independent)


def test_render_coherent_is_the_library_draw_and_chunk_free(demo_model):
    graphdef, params = demo_model
    key = jax.random.key(7)
    options = dict(height=HEIGHT, width=WIDTH, method="sample", num_samples=2, coherent=True)
    whole = render.render_values(graphdef, params, key=key, **options)
    chunked = render.render_values(graphdef, params, key=key, pixels_per_chunk=50, **options)
    np.testing.assert_array_equal(whole, chunked)
    mixture = model.apply(graphdef, params, data.pixel_grid(HEIGHT, WIDTH))
    for index in range(2):
        expected = coherent.coherent_sample(jax.random.fold_in(key, index), mixture)
        np.testing.assert_allclose(
            whole[index], np.asarray(expected).reshape(HEIGHT, WIDTH, 3), rtol=1e-5, atol=1e-6
        )
    with pytest.raises(ValueError, match="coherent applies to method 'sample' only"):
        render.render_values(graphdef, params, height=4, width=4, method="mode", coherent=True)
