"""Property tests (hypothesis) on the mixture math over random structures and extreme ranges.

Deterministic (derandomize=True) so CI never flakes; shapes come from a small set so the jitted
functions compile a handful of times.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import mdn_jax
from mdn_jax import discretised

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


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
    logits = rng.uniform(-logit_range, logit_range, size=batch + ((d, k) if structure == "per_dim" else (k,)))
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


@SETTINGS
@given(mixtures(), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.sampled_from([0.0, 1.0, 2.0]))
def test_samples_and_moments_are_never_nan(case, temperature, sigma_temperature):
    mixture, _ = case
    draws = jax.jit(lambda m, t, s: mdn_jax.sample(jax.random.key(0), m, sample_shape=(8,), temperature=t,
                                                   sigma_temperature=s))(mixture, temperature, sigma_temperature)
    assert not np.any(np.isnan(np.asarray(draws)))
    assert np.all(np.isfinite(np.asarray(mdn_jax.mean(mixture))))
    assert np.all(np.asarray(mdn_jax.variance(mixture)) >= 0)


@SETTINGS
@given(mixtures())
def test_discretised_log_prob_is_finite_and_at_most_zero(case):
    mixture, y = case
    if mdn_jax.structure(mixture) == "full":
        return  # density times bin volume: not a probability bound
    value = np.asarray(jax.jit(discretised.discretised_log_prob)(mixture, jnp.clip(y, 0.0, 1.0)))
    assert np.all(np.isfinite(value)) and np.all(value <= 1e-5)
