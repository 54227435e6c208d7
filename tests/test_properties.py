"""Property tests (hypothesis) on the mixture math over random structures and extreme ranges.

Deterministic (derandomize=True) so CI never flakes; shapes come from a small set so the jitted
functions compile a handful of times. Over moderate parameters, log_prob is also compared with
scipy.stats in float64, for float32 and for float64 (JAX's x64 mode) inputs.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import log_softmax, logsumexp

import mdn_jax
from mdn_jax import discretised

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


@st.composite
def mixtures(draw):
    structure = draw(st.sampled_from(["joint", "per_dim", "full"]))
    k, d = draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 2]))
    batch = draw(st.sampled_from([(), (4,)]))
    seed = draw(st.integers(0, 2**31 - 1))
    log_scale_low, log_scale_high = sorted(draw(st.lists(st.floats(-6, 6), min_size=2, max_size=2)))
    logit_range = draw(st.sampled_from([1.0, 30.0, 1e4]))
    y_range = draw(st.sampled_from([1.0, 1e3]))
    rng = np.random.default_rng(seed)
    shape = batch + ((d, k) if structure == "per_dim" else (k, d))
    logits = rng.uniform(
        -logit_range, logit_range, size=batch + ((d, k) if structure == "per_dim" else (k,))
    )
    means = rng.uniform(-10, 10, size=shape)
    scales = 10.0 ** rng.uniform(log_scale_low, log_scale_high + 1e-3, size=shape)
    y = rng.uniform(-y_range, y_range, size=batch + (d,))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    if structure == "joint":
        mixture = mdn_jax.joint(f32(logits), f32(means), f32(scales))
    elif structure == "per_dim":
        mixture = mdn_jax.per_dim(f32(logits), f32(means), f32(scales))
    else:
        tril = np.zeros(batch + (k, d, d))
        idx = np.arange(d)
        tril[..., idx, idx] = scales
        if d > 1:
            tril[..., 1, 0] = rng.uniform(-1, 1, size=batch + (k,)) * scales[..., 0]
        mixture = mdn_jax.full(f32(logits), f32(means), f32(tril))
    return mixture, f32(y)


@jax.jit
def _values(mixture, y):
    log_p = mdn_jax.log_prob(mixture, y)
    components = mdn_jax.component_log_probs(mixture, y)
    bound = jnp.max(components, axis=-1)
    if mdn_jax.structure(mixture) == "per_dim":
        bound = jnp.sum(bound, axis=-1)
    grads = jax.grad(lambda m, t: jnp.sum(mdn_jax.log_prob(m, t)), argnums=(0, 1))(mixture, y)
    return log_p, bound, grads


@SETTINGS
@given(mixtures())
def test_log_prob_finite_bounded_by_best_component_with_finite_gradients(case):
    mixture, y = case
    log_p, bound, grads = _values(mixture, y)
    log_p, bound = np.asarray(log_p, np.float64), np.asarray(bound, np.float64)
    assert np.all(np.isfinite(log_p))
    assert np.all(log_p <= bound + 1e-5 * np.maximum(1.0, np.abs(bound)))
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))


@jax.jit  # one compile per mixture shape, not per example
def _draws_and_moments(mixture, temperature, sigma_temperature):
    draws = mdn_jax.sample(
        jax.random.key(0),
        mixture,
        sample_shape=(8,),
        temperature=temperature,
        sigma_temperature=sigma_temperature,
    )
    return draws, mdn_jax.mean(mixture), mdn_jax.variance(mixture)


@SETTINGS
@given(mixtures(), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.sampled_from([0.0, 1.0, 2.0]))
def test_samples_and_moments_are_never_nan(case, temperature, sigma_temperature):
    mixture, _ = case
    draws, mean, variance = _draws_and_moments(mixture, temperature, sigma_temperature)
    assert not np.any(np.isnan(np.asarray(draws)))
    assert np.all(np.isfinite(np.asarray(mean)))
    assert np.all(np.asarray(variance) >= 0)


@SETTINGS
@given(mixtures())
def test_discretised_log_prob_is_finite_and_at_most_zero(case):
    mixture, y = case
    if mdn_jax.structure(mixture) == "full":
        return  # density times bin volume: not a probability bound
    value = np.asarray(jax.jit(discretised.discretised_log_prob)(mixture, jnp.clip(y, 0.0, 1.0)))
    assert np.all(np.isfinite(value)) and np.all(value <= 1e-5)


# ---------------------------------------------------------------------------------------------
# log_prob against scipy.stats where float64 scipy is the truth: moderate parameters (scales
# 0.1-3, means and targets within +-4, logits within +-4, Cholesky factors with |off-diagonal|
# below the diagonal), so every density is far from float64 underflow.


def _x64():
    """A context with JAX's float64 enabled (`jax.enable_x64` in new JAX, `jax.experimental`
    before)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # JAX before enable_x64 moved

    return enable_x64()


@st.composite
def moderate_mixtures(draw):
    """(structure, parameters as float64 numpy, y [B, D]) with B = 5, K in {1, 3}, D in {1, 3}."""
    structure = draw(st.sampled_from(["joint", "per_dim", "full"]))
    k, d, batch = draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 3])), 5
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if structure == "per_dim":
        logits, means = rng.uniform(-4, 4, (batch, d, k)), rng.uniform(-4, 4, (batch, d, k))
        scales = 10.0 ** rng.uniform(-1, 0.5, (batch, d, k))
    else:
        logits, means = rng.uniform(-4, 4, (batch, k)), rng.uniform(-4, 4, (batch, k, d))
        scales = 10.0 ** rng.uniform(-1, 0.5, (batch, k, d))
    if structure == "full":
        off_diagonal = np.tril(rng.uniform(-0.9, 0.9, (batch, k, d, d)), -1) * scales[..., None, :]
        scales = off_diagonal + np.eye(d) * scales[..., None, :]  # scale_tril [B, K, D, D]
    return structure, (logits, means, scales), rng.uniform(-4, 4, (batch, d))


def _scipy_log_prob(structure, params, y):
    """float64 log density `[B]`, one batch entry at a time, with scipy.stats, and the size of
    the terms it sums `[B]` (max over K of |log weight + component log density|, summed over the
    D mixtures for per_dim): rounding errors of a float32 computation scale with that."""
    logits, means, scales = params
    values, sizes = [], []
    for b in range(y.shape[0]):
        if structure == "per_dim":  # a K-component 1-D mixture per dimension, summed over D
            terms = [
                log_softmax(logits[b, i]) + stats.norm.logpdf(y[b, i], means[b, i], scales[b, i])
                for i in range(y.shape[1])
            ]
        elif structure == "joint":  # components: products of 1-D normals over D
            terms = [
                log_softmax(logits[b]) + stats.norm.logpdf(y[b], means[b], scales[b]).sum(axis=-1)
            ]
        else:
            terms = [
                log_softmax(logits[b])
                + np.array(
                    [
                        stats.multivariate_normal.logpdf(
                            y[b], means[b, i], scales[b, i] @ scales[b, i].T
                        )
                        for i in range(logits.shape[-1])
                    ]
                )
            ]
        values.append(sum(logsumexp(t) for t in terms))
        sizes.append(sum(np.abs(t).max() for t in terms))
    return np.array(values), np.array(sizes)


_log_prob = jax.jit(lambda mixture, y: mdn_jax.log_prob(mixture, y))
# Allowed |mdn_jax - scipy| per unit of (1 + term size), see _scipy_log_prob. float32: 8 ulps
# (seen: up to 2.7e-7). float64: 18 ulps; for full, scipy's multivariate_normal goes through an
# eigendecomposition of the covariance and is itself off by up to 8e-13 here, while mdn_jax stays
# within 3e-16 of a triangular-solve reference, so the bound there is scipy's accuracy.
TOLERANCE = {np.float32: 1e-6, np.float64: 4e-15}
FULL_FLOAT64_TOLERANCE = 2e-11


@settings(SETTINGS, max_examples=40)
@given(moderate_mixtures(), st.sampled_from([np.float32, np.float64]))
def test_log_prob_matches_scipy(case, dtype):
    structure, params, y = case
    params, y = [np.asarray(p, dtype) for p in params], np.asarray(y, dtype)
    # the reference sees exactly the (rounded) values mdn_jax sees
    expected, size = _scipy_log_prob(
        structure, [p.astype(np.float64) for p in params], y.astype(np.float64)
    )
    constructor = {"joint": mdn_jax.joint, "per_dim": mdn_jax.per_dim, "full": mdn_jax.full}[
        structure
    ]
    with _x64() if dtype == np.float64 else contextlib.nullcontext():
        got = _log_prob(constructor(*params), y)
    assert got.dtype == dtype and got.shape == expected.shape
    error = np.abs(np.asarray(got, np.float64) - expected)
    tolerance = (
        FULL_FLOAT64_TOLERANCE if (structure, dtype) == ("full", np.float64) else TOLERANCE[dtype]
    )
    assert np.all(error <= tolerance * (1.0 + size)), (error / (1.0 + size)).max()
