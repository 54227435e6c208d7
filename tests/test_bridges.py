"""Tests of mdn_jax.to_distrax / to_numpyro: the same density as mdn_jax, the same samples' law."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_marginals import BATCHES, STRUCTURES, build, make_params

import mdn_jax as mdn

pytest.importorskip("distrax")
pytest.importorskip("numpyro")
pytest.importorskip("tensorflow_probability.substrates.jax")

BRIDGES = {"distrax": mdn.to_distrax, "numpyro": mdn.to_numpyro, "tfp": mdn.to_tfp}
MODULES = {"distrax": "distrax", "numpyro": "numpyro", "tfp": "tensorflow_probability"}


def draw(library, distribution, key, count):
    if library == "numpyro":
        return distribution.sample(key, (count,))
    return distribution.sample(seed=key, sample_shape=(count,))


@pytest.mark.parametrize("library", BRIDGES)
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", BATCHES)
def test_log_prob_equals_mdn_jax(library, structure, batch):
    rng = np.random.default_rng(20)
    mixture = build(structure, make_params(structure, batch, 4, 3, rng))
    y = rng.normal(0, 2, (5,) + batch + (3,)).astype(np.float32)  # 5 draws per batch entry
    distribution = BRIDGES[library](mixture)
    assert tuple(distribution.batch_shape) == batch and tuple(distribution.event_shape) == (3,)
    expected = jax.jit(mdn.log_prob)(mixture, y)
    if batch == BATCHES[0]:  # eagerly once per library and structure (op by op: slow to test)
        np.testing.assert_allclose(distribution.log_prob(y), expected, rtol=2e-5, atol=2e-5)
    jitted = jax.jit(lambda m, y: BRIDGES[library](m).log_prob(y))(mixture, y)
    np.testing.assert_allclose(jitted, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("library", BRIDGES)
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("temperatures", [(1.0, 1.0), (0.5, 0.7)])
def test_samples_match_mdn_jax_mean_and_variance(library, structure, temperatures):
    """Monte Carlo, 40,000 draws: mean within 5 standard errors of mdn_jax's exact mean, and
    variance within 5 standard errors of the exact variance (untempered) or of the variance of
    as many draws from mdn_jax.sample at the same temperatures."""
    temperature, sigma_temperature = temperatures
    rng = np.random.default_rng(21)
    mixture = build(structure, make_params(structure, (2,), 3, 2, rng))
    count = 40_000

    @jax.jit
    def sampled(mixture, key):
        distribution = BRIDGES[library](
            mixture, temperature=temperature, sigma_temperature=sigma_temperature
        )
        return draw(library, distribution, key, count)

    draws = np.asarray(sampled(mixture, jax.random.key(3)), np.float64)
    assert draws.shape == (count, 2, 2)
    if temperatures == (1.0, 1.0):
        mean, variance = np.asarray(mdn.mean(mixture)), np.asarray(mdn.variance(mixture))
        spread = np.zeros_like(mean)
    else:
        ours = np.asarray(
            mdn.sample(
                jax.random.key(4),
                mixture,
                sample_shape=(count,),
                temperature=temperature,
                sigma_temperature=sigma_temperature,
            ),
            np.float64,
        )
        mean, variance = ours.mean(axis=0), ours.var(axis=0)
        spread = np.std((ours - mean) ** 2, axis=0) / np.sqrt(count)
    centred = draws - draws.mean(axis=0)
    estimates = 1 if temperatures == (1.0, 1.0) else 2  # Monte Carlo on one side or on both
    mean_error = np.sqrt(estimates * draws.var(axis=0) / count)
    variance_error = np.hypot(np.std(centred**2, axis=0) / np.sqrt(count), spread)
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5 * mean_error + 1e-6)
    assert np.all(np.abs(draws.var(axis=0) - variance) < 5 * variance_error + 1e-6)


@pytest.mark.parametrize("library", BRIDGES)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_temperatures_are_applied_to_the_parameters(library, structure):
    rng = np.random.default_rng(22)
    logits, means, third = make_params(structure, (3,), 4, 2, rng)
    y = rng.normal(0, 2, (3, 2)).astype(np.float32)
    distribution = BRIDGES[library](
        build(structure, (logits, means, third)), temperature=0.5, sigma_temperature=2.0
    )
    by_hand = build(structure, (logits / 0.5, means, third * 2.0))
    np.testing.assert_allclose(
        distribution.log_prob(y), mdn.log_prob(by_hand, y), rtol=2e-5, atol=2e-5
    )


@pytest.mark.parametrize("library", BRIDGES)
def test_temperature_zero_keeps_the_heaviest_component(library):
    mixture = mdn.joint(
        jnp.array([0.0, 2.0, 1.0]), jnp.array([[-5.0], [3.0], [9.0]]), jnp.ones((3, 1))
    )
    distribution = BRIDGES[library](mixture, temperature=0.0)
    draws = np.asarray(draw(library, distribution, jax.random.key(5), 2000))
    assert abs(draws.mean() - 3.0) < 0.15 and draws.min() > -2.0 and draws.max() < 8.0
    heaviest = mdn.joint(jnp.zeros(1), jnp.array([[3.0]]), jnp.ones((1, 1)))
    y = jnp.array([[2.5]])
    np.testing.assert_allclose(distribution.log_prob(y), mdn.log_prob(heaviest, y), rtol=1e-6)


@pytest.mark.parametrize("library", BRIDGES)
def test_bad_temperatures_say_what_to_do(library):
    mixture = build("joint", make_params("joint", (), 2, 2, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="sigma_temperature must be positive for a distribution"):
        BRIDGES[library](mixture, sigma_temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be non-negative"):
        BRIDGES[library](mixture, temperature=-1.0)


@pytest.mark.parametrize("library", BRIDGES)
def test_without_the_library_one_line_names_the_extra(library, monkeypatch):
    mixture = build("joint", make_params("joint", (), 2, 2, np.random.default_rng(0)))
    for name in [m for m in sys.modules if m.split(".")[0] == MODULES[library]]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, MODULES[library], None)  # import now raises ImportError
    with pytest.raises(ImportError) as caught:
        BRIDGES[library](mixture)
    message = str(caught.value)
    assert "\n" not in message and f'pip install "mdn_jax[{library}]"' in message
