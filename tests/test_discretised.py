"""Discretised 8-bit likelihood: bin masses against scipy, normalisation, extremes, training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

import mdn_jax
from mdn_jax import data, discretised, model, train

LEVELS = np.arange(256) / 255.0
W = 1.0 / 255.0


def _edges(y):
    lower = np.where(y - W / 2 <= 0.0, -np.inf, y - W / 2)
    upper = np.where(y + W / 2 >= 1.0, np.inf, y + W / 2)
    return lower, upper


def _reference_joint(logits, means, scales, y):
    """float64 scipy: log sum_k w_k prod_d (Phi(upper) - Phi(lower)), y [D], params [K, D].

    Each log mass is taken in the tail away from the mean (logsf above it, logcdf below) so
    that float64 does not underflow for bins many standard deviations out.
    """
    lower, upper = _edges(y)
    lower, upper = np.broadcast_to(lower, means.shape), np.broadcast_to(upper, means.shape)
    above = lower > means
    big = np.where(
        above, stats.norm.logsf(lower, means, scales), stats.norm.logcdf(upper, means, scales)
    )
    small = np.where(
        above, stats.norm.logsf(upper, means, scales), stats.norm.logcdf(lower, means, scales)
    )
    log_masses = big + np.log1p(-np.exp(small - big))  # [K, D]
    log_w = logits - logsumexp(logits)
    return logsumexp(log_w + log_masses.sum(-1))


@pytest.mark.parametrize("scale", [0.003, 0.02, 0.3, 5.0])
def test_masses_over_all_256_bins_sum_to_one(scale):
    mixture = mdn_jax.joint(
        jnp.array([0.4, -0.3, 0.0]),
        jnp.array([[0.1], [0.55], [1.3]]),
        jnp.array([[scale], [2 * scale], [scale / 2]]),
    )
    total = jnp.exp(
        jax.jit(discretised.discretised_log_prob)(mixture, jnp.asarray(LEVELS[:, None]))
    ).sum()
    np.testing.assert_allclose(float(total), 1.0, atol=1e-5)
    per = mdn_jax.per_dim(jnp.zeros((1, 2)), jnp.array([[0.2, 0.7]]), jnp.array([[scale, scale]]))
    total = jnp.exp(discretised.discretised_log_prob(per, jnp.asarray(LEVELS[:, None]))).sum()
    np.testing.assert_allclose(float(total), 1.0, atol=1e-5)


def test_bin_mass_agrees_with_numerical_integration_of_the_density():
    means, scales, weights = np.array([0.3, 0.62]), np.array([0.04, 0.2]), np.array([0.7, 0.3])
    mixture = mdn_jax.joint(
        jnp.log(jnp.asarray(weights, jnp.float32)),
        jnp.asarray(means[:, None], jnp.float32),
        jnp.asarray(scales[:, None], jnp.float32),
    )
    density = lambda t: float(np.sum(weights * stats.norm.pdf(t, means, scales)))  # noqa: E731
    for level in (0, 1, 77, 128, 200, 254, 255):
        y = level / 255.0
        lower, upper = _edges(np.array(y))
        mass, _ = integrate.quad(density, float(lower), float(upper), epsabs=1e-13, epsrel=1e-10)
        got = float(discretised.discretised_log_prob(mixture, jnp.array([y], jnp.float32)))
        np.testing.assert_allclose(got, math.log(mass), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [(), (7,), (3, 5)])
def test_joint_and_per_dim_match_scipy_under_jit_and_vmap(batch):
    rng = np.random.default_rng(len(batch))
    k, d = 4, 3
    logits = rng.normal(size=batch + (k,))
    means = rng.uniform(-0.1, 1.1, size=batch + (k, d))
    scales = np.exp(rng.uniform(np.log(0.002), np.log(0.5), size=batch + (k, d)))
    y = rng.integers(0, 256, size=batch + (d,)) / 255.0
    mixture = mdn_jax.joint(*(jnp.asarray(a, jnp.float32) for a in (logits, means, scales)))
    expected = np.vectorize(
        lambda i: _reference_joint(
            logits.reshape(-1, k)[i],
            means.reshape(-1, k, d)[i],
            scales.reshape(-1, k, d)[i],
            y.reshape(-1, d)[i],
        )
    )(np.arange(int(np.prod(batch)))).reshape(batch)
    got = jax.jit(discretised.discretised_log_prob)(mixture, jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    if batch:
        mapped = jax.jit(jax.vmap(discretised.discretised_log_prob))(
            mixture, jnp.asarray(y, jnp.float32)
        )
        np.testing.assert_allclose(mapped, expected, rtol=1e-5, atol=1e-4)
    # per_dim: each dimension its own 1-D mixture; the reference sums per-dimension log masses.
    per = mdn_jax.per_dim(
        *(
            jnp.asarray(np.swapaxes(a, -1, -2), jnp.float32)
            for a in (np.repeat(logits[..., None, :], d, -2).swapaxes(-1, -2), means, scales)
        )
    )
    expected_per = sum(
        np.vectorize(
            lambda i, j: _reference_joint(
                logits.reshape(-1, k)[i],
                means.reshape(-1, k, d)[i][:, j : j + 1],
                scales.reshape(-1, k, d)[i][:, j : j + 1],
                y.reshape(-1, d)[i][j : j + 1],
            )
        )(np.arange(int(np.prod(batch))), j)
        for j in range(d)
    ).reshape(batch)
    np.testing.assert_allclose(
        jax.jit(discretised.discretised_log_prob)(per, jnp.asarray(y, jnp.float32)),
        expected_per,
        rtol=1e-5,
        atol=1e-4,
    )


def test_full_uses_density_times_bin_volume():
    mixture = mdn_jax.full(
        jnp.zeros(2),
        jnp.array([[0.2, 0.4], [0.7, 0.5]]),
        jnp.array([[[0.1, 0.0], [0.02, 0.1]], [[0.2, 0.0], [0.0, 0.05]]]),
    )
    y = jnp.array([0.3, 0.45])
    np.testing.assert_allclose(
        discretised.discretised_log_prob(mixture, y),
        mdn_jax.log_prob(mixture, y) + 2 * math.log(W),
        rtol=1e-6,
    )


def test_256_sharp_equal_components_give_exactly_8_bits_per_channel():
    mixture = mdn_jax.joint(
        jnp.zeros(256), jnp.asarray(LEVELS[:, None], jnp.float32), jnp.full((256, 1), 1e-4)
    )
    bits = discretised.bits_per_channel(mixture, jnp.asarray(LEVELS[:, None], jnp.float32))
    np.testing.assert_allclose(float(bits), 8.0, atol=1e-4)


def _value(logits, means, scales, target):
    return discretised.discretised_log_prob(mdn_jax.joint(logits, means, scales), target)


_value_and_grads = jax.jit(
    jax.value_and_grad(_value, argnums=(0, 1, 2))
)  # one compile for every case


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1e6])
@pytest.mark.parametrize("y", [0.0, 0.5, 1.0, 37 / 255])
def test_extremes_stay_finite_with_finite_gradients(scale, y):
    """Scales 1e-6 and 1e6, edge bins, a mean 40 away, a logit of -1e4: all finite."""
    args = (
        jnp.array([0.0, -1e4]),
        jnp.array([[0.5, -3.0], [40.0, 1.0]]),
        jnp.full((2, 2), scale),
        jnp.array([y, y]),
    )
    value, grads = _value_and_grads(*args)
    assert np.isfinite(float(value))
    for grad in grads:
        assert np.all(np.isfinite(np.asarray(grad)))


def test_discretised_loss_trains_and_metrics_report_bits():
    images = data.demo_images(count=2, size=12)
    xs, ys = data.image_pairs(images)
    config = model.ModelConfig(
        hidden=(16, 16),
        components=3,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    result = train.fit(
        xs,
        ys,
        model_config=config,
        train_config=train.TrainConfig(epochs=15, batch_size=32, loss="discretised"),
    )
    losses = [h["loss"] for h in result.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    from mdn_jax import metrics

    scores = metrics.image_scores(result.graphdef, result.params, images)
    # The training loss is the discretised NLL in nats per pixel (3 channels): the same figure.
    assert abs(scores["bits_per_channel"] * 3 * math.log(2) - losses[-1]) < 0.5
    assert 0 < scores["bits_per_channel"] < 8
