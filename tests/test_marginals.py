"""Tests of mdn_jax.marginals (cdf, quantile) against independent float64 scipy references.

The references rebuild each dimension's marginal from the raw parameters in float64 numpy
(for full: the diagonal of the covariance L L^T) and never call mdn_jax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import softmax

import mdn_jax as mdn
from mdn_jax.marginals import marginal_mixtures

STRUCTURES = ("joint", "per_dim", "full")
BATCHES = [(), (3,), (2, 4)]


def make_params(structure, batch, K, D, rng, *, scale_range=(0.3, 2.0), spread=2.0):
    """Random float32 parameters; scales drawn log-uniformly from `scale_range`."""
    batch = tuple(batch)
    low, high = np.log(scale_range)
    scale = lambda shape: np.exp(rng.uniform(low, high, shape))
    if structure == "per_dim":
        params = (
            rng.normal(0, 1.5, batch + (D, K)),
            rng.normal(0, spread, batch + (D, K)),
            scale(batch + (D, K)),
        )
    elif structure == "joint":
        params = (
            rng.normal(0, 1.5, batch + (K,)),
            rng.normal(0, spread, batch + (K, D)),
            scale(batch + (K, D)),
        )
    else:
        diagonal = scale(batch + (K, D))
        tril = np.tril(rng.normal(0, 0.3, batch + (K, D, D)), k=-1) * diagonal[..., None, :]
        tril = tril + np.eye(D) * diagonal[..., None, :]
        params = (rng.normal(0, 1.5, batch + (K,)), rng.normal(0, spread, batch + (K, D)), tril)
    return tuple(np.asarray(p, np.float32) for p in params)


def build(structure, params):
    return {"joint": mdn.joint, "per_dim": mdn.per_dim, "full": mdn.full}[structure](*params)


def ref_marginals(structure, params):
    """Float64 (weights, means, scales), each `[..., D, K]`, from the raw parameters."""
    logits, means, third = (np.asarray(p, np.float64) for p in params)
    if structure == "per_dim":
        return softmax(logits, axis=-1), means, third
    D = means.shape[-1]
    weights = np.repeat(softmax(logits, axis=-1)[..., None, :], D, axis=-2)
    if structure == "joint":
        scales = third
    else:
        covariance = np.einsum("...ij,...kj->...ik", np.tril(third), np.tril(third))
        scales = np.sqrt(np.diagonal(covariance, axis1=-2, axis2=-1))
    return weights, np.swapaxes(means, -1, -2), np.swapaxes(scales, -1, -2)


def ref_cdf(marginals, y):
    weights, means, scales = marginals
    y = np.asarray(y, np.float64)[..., None]
    return np.sum(weights * stats.norm.cdf(y, loc=means, scale=scales), axis=-1)


def ref_quantile_1d(weights, means, scales, q):
    """Float64 brentq root of sum_k w_k Phi((x - m_k)/s_k) = q."""
    f = lambda x: np.sum(weights * stats.norm.cdf(x, loc=means, scale=scales)) - q
    low = np.min(means - 50 * scales)
    high = np.max(means + 50 * scales)
    return optimize.brentq(f, low, high, xtol=1e-14, rtol=1e-14)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", BATCHES)
def test_marginal_mixtures_match_reference(structure, batch):
    rng = np.random.default_rng(1)
    params = make_params(structure, batch, 4, 3, rng)
    got = marginal_mixtures(build(structure, params))
    weights, means, scales = ref_marginals(structure, params)
    np.testing.assert_allclose(np.exp(got.log_weights), weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.means, means, rtol=1e-6)
    np.testing.assert_allclose(got.scales, scales, rtol=1e-5)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", BATCHES)
def test_cdf_equals_scipy(structure, batch):
    rng = np.random.default_rng(2)
    params = make_params(structure, batch, 5, 3, rng)
    mixture = build(structure, params)
    y = rng.normal(0, 3, batch + (3,)).astype(np.float32)
    expected = ref_cdf(ref_marginals(structure, params), y)
    for fn in (mdn.cdf, jax.jit(mdn.cdf)):
        got = fn(mixture, y)
        assert got.shape == batch + (3,)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_cdf_under_vmap_and_broadcasting(structure):
    rng = np.random.default_rng(3)
    params = make_params(structure, (6,), 3, 2, rng)
    mixture = build(structure, params)
    y = rng.normal(0, 2, (6, 2)).astype(np.float32)
    mapped = jax.vmap(mdn.cdf)(mixture, y)
    np.testing.assert_allclose(mapped, mdn.cdf(mixture, y), rtol=1e-6, atol=1e-7)
    # several observations against one batch of mixtures: [7, 6, 2]
    many = rng.normal(0, 2, (7, 6, 2)).astype(np.float32)
    expected = ref_cdf(ref_marginals(structure, params), many)
    np.testing.assert_allclose(mdn.cdf(mixture, many), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_cdf_extreme_inputs(structure):
    rng = np.random.default_rng(4)
    params = make_params(structure, (3,), 3, 2, rng, scale_range=(1e-6, 1e4), spread=1e3)
    mixture = build(structure, params)
    for value, expected in ((-1e30, 0.0), (1e30, 1.0), (-np.inf, 0.0), (np.inf, 1.0)):
        got = mdn.cdf(mixture, jnp.full((3, 2), value, jnp.float32))
        np.testing.assert_allclose(got, expected, atol=1e-7)
    y = rng.normal(0, 1e3, (3, 2)).astype(np.float32)
    expected = ref_cdf(ref_marginals(structure, params), y)
    np.testing.assert_allclose(mdn.cdf(mixture, y), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize(
    "scale_range, spread", [((0.3, 2.0), 2.0), ((1e-4, 1e-2), 1.0), ((10.0, 1e4), 1e3)]
)
def test_quantile_inverts_cdf_to_1e5(structure, scale_range, spread):
    """The float64 reference cdf at the returned quantile is q to 1e-5, for every q on a grid.

    Where a component is so narrow that the cdf rises by more than 1e-5 between neighbouring
    float32 numbers, no float32 answer can meet that; there the root must lie within one float32
    step of the answer (the cdf one step below is at most q, one step above at least q).
    """
    rng = np.random.default_rng(5)
    params = make_params(structure, (4,), 5, 2, rng, scale_range=scale_range, spread=spread)
    mixture = build(structure, params)
    q = np.concatenate([[1e-6, 1e-4], np.linspace(0.01, 0.99, 23), [1 - 1e-4]]).astype(np.float32)
    x = np.asarray(mdn.quantile(mixture, q[:, None, None]), np.float64)  # [Q, 4, 2]
    assert x.shape == (len(q), 4, 2) and np.all(np.isfinite(x))
    marginals = ref_marginals(structure, params)
    target = np.broadcast_to(q[:, None, None], x.shape).astype(np.float64)
    x32 = x.astype(np.float32)
    below = ref_cdf(marginals, np.nextafter(x32, np.float32(-np.inf)))
    above = ref_cdf(marginals, np.nextafter(x32, np.float32(np.inf)))
    assert np.all(below <= target + 1e-5) and np.all(above >= target - 1e-5)
    if scale_range[0] >= 0.3:  # smooth enough for float32 to resolve q to 1e-5 itself
        np.testing.assert_allclose(ref_cdf(marginals, x), target, atol=1e-5)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_quantile_is_monotone_in_q(structure):
    rng = np.random.default_rng(6)
    params = make_params(structure, (3,), 6, 2, rng, spread=5.0)
    q = np.linspace(0.0005, 0.9995, 2000, dtype=np.float32)
    x = np.asarray(mdn.quantile(build(structure, params), q[:, None, None]))
    assert np.all(np.diff(x, axis=0) >= 0)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_quantile_equals_brentq_reference(structure):
    rng = np.random.default_rng(7)
    params = make_params(structure, (3,), 3, 2, rng)
    marginals = ref_marginals(structure, params)
    q = rng.uniform(0.02, 0.98, (3, 2)).astype(np.float32)
    got = np.asarray(jax.jit(mdn.quantile)(build(structure, params), q))
    for index in np.ndindex(3, 2):
        parts = [m[index] for m in marginals]
        expected = ref_quantile_1d(*parts, float(q[index]))
        assert got[index] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_quantile_of_one_gaussian_is_its_ppf():
    mixture = mdn.joint(
        jnp.zeros((1,)), jnp.array([[1.5, -2.0]]), jnp.array([[0.5, 3.0]], jnp.float32)
    )
    q = np.array([[0.1], [0.5], [0.975]], np.float32)
    expected = stats.norm.ppf(q.astype(np.float64), loc=[1.5, -2.0], scale=[0.5, 3.0])
    np.testing.assert_allclose(mdn.quantile(mixture, q), expected, rtol=1e-6, atol=1e-6)


def test_quantile_edges_and_zero_weights():
    mixture = mdn.per_dim(
        jnp.array([[0.0, -jnp.inf]]), jnp.array([[0.0, 1e6]]), jnp.array([[1.0, 1.0]])
    )
    got = mdn.quantile(mixture, jnp.array([[0.0], [1.0], [-0.5], [1.5], [0.5]]))
    assert got[0, 0] == -np.inf and got[1, 0] == np.inf
    assert np.isnan(got[2, 0]) and np.isnan(got[3, 0])
    # the weightless component at 1e6 widens nothing: the median is the live component's mean
    assert abs(float(got[4, 0])) < 1e-6


@pytest.mark.parametrize("structure", STRUCTURES)
def test_quantile_under_vmap(structure):
    rng = np.random.default_rng(8)
    params = make_params(structure, (5,), 4, 3, rng)
    mixture = build(structure, params)
    q = rng.uniform(0.05, 0.95, (5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        jax.vmap(mdn.quantile)(mixture, q), mdn.quantile(mixture, q), rtol=1e-6, atol=1e-6
    )
