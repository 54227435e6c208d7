"""Tests of mdn_jax.mixture against independent float64 references (scipy / numpy).

Every reference below is computed in float64 numpy or scipy from the float32 parameters that
are handed to mdn_jax; mdn_jax itself is never used to build an expected value.
"""

from __future__ import annotations

import functools
import inspect
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp, softmax

import mdn_jax as mdn

STRUCTURES = ("joint", "per_dim", "full")
F32 = np.float32


# ---------------------------------------------------------------------------------------------
# Parameter generation and float64 references.


def make_params(structure, batch, K, D, rng, *, upper_junk=True):
    """Random, well-conditioned float32 parameters for `structure`, as a tuple of numpy arrays."""
    batch = tuple(batch)
    if structure == "per_dim":
        logits = rng.normal(0.0, 1.5, batch + (D, K))
        means = rng.normal(0.0, 2.0, batch + (D, K))
        scales = rng.uniform(0.3, 2.0, batch + (D, K))
        return tuple(a.astype(F32) for a in (logits, means, scales))
    logits = rng.normal(0.0, 1.5, batch + (K,))
    means = rng.normal(0.0, 2.0, batch + (K, D))
    if structure == "joint":
        scales = rng.uniform(0.3, 2.0, batch + (K, D))
        return tuple(a.astype(F32) for a in (logits, means, scales))
    tril = np.tril(rng.normal(0.0, 0.2, batch + (K, D, D)), k=-1)
    tril = tril + np.eye(D) * rng.uniform(0.5, 1.5, batch + (K, D))[..., None, :]
    if upper_junk:  # the constructor must ignore the strict upper triangle
        tril = tril + np.triu(rng.normal(0.0, 5.0, batch + (K, D, D)), k=1)
    return tuple(a.astype(F32) for a in (logits, means, tril))


def build(structure, params):
    return {"joint": mdn.joint, "per_dim": mdn.per_dim, "full": mdn.full}[structure](*params)


def f64(params):
    return tuple(np.asarray(p, dtype=np.float64) for p in params)


def ref_log_prob(structure, params, y):
    """Float64 log density, looping over batch entries; params and y already broadcast."""
    logits, means, third = f64(params)
    y = np.asarray(y, dtype=np.float64)
    batch = y.shape[:-1]
    out = np.empty(batch)
    for idx in np.ndindex(*batch):
        yi = y[idx]
        if structure == "per_dim":
            total = 0.0
            for d in range(yi.shape[-1]):
                lw = logits[idx][d] - logsumexp(logits[idx][d])
                comp = stats.norm.logpdf(yi[d], loc=means[idx][d], scale=third[idx][d])
                total += logsumexp(lw + comp)
            out[idx] = total
            continue
        lw = logits[idx] - logsumexp(logits[idx])
        K = lw.shape[0]
        comp = np.empty(K)
        for k in range(K):
            if structure == "joint":
                comp[k] = np.sum(stats.norm.logpdf(yi, loc=means[idx][k], scale=third[idx][k]))
            else:
                L = np.tril(third[idx][k])
                comp[k] = stats.multivariate_normal.logpdf(yi, mean=means[idx][k], cov=L @ L.T)
        out[idx] = logsumexp(lw + comp)
    return out


def ref_components(structure, params):
    """Float64 weights [..., K] or [..., D, K], means [..., K, D], covariances [..., K, D, D].

    For per_dim the 'covariances' are diagonal and the weights stay per dimension.
    """
    logits, means, third = f64(params)
    w = softmax(logits, axis=-1)
    if structure == "per_dim":
        mu = np.swapaxes(means, -1, -2)
        var = np.swapaxes(third**2, -1, -2)
        cov = var[..., :, None] * np.eye(var.shape[-1])
        return w, mu, cov
    if structure == "joint":
        cov = (third**2)[..., :, None] * np.eye(third.shape[-1])
        return w, means, cov
    L = np.tril(third)
    return w, means, L @ np.swapaxes(L, -1, -2)


def ref_moments(structure, params):
    """Closed-form float64 mean [..., D] and marginal variance [..., D]."""
    w, mu, cov = ref_components(structure, params)
    comp_var = np.diagonal(cov, axis1=-2, axis2=-1)  # [..., K, D]
    if structure == "per_dim":
        wt = np.swapaxes(w, -1, -2)  # [..., K, D]
        m = np.sum(wt * mu, axis=-2)
        second = np.sum(wt * (comp_var + mu**2), axis=-2)
    else:
        m = np.sum(w[..., :, None] * mu, axis=-2)
        second = np.sum(w[..., :, None] * (comp_var + mu**2), axis=-2)
    return m, second - m**2


def ref_full_covariance(params):
    """Float64 mixture covariance [D, D] of a single (unbatched) full-covariance mixture."""
    w, mu, cov = ref_components("full", params)
    m = w @ mu
    second = np.einsum("k,kij->ij", w, cov + mu[:, :, None] * mu[:, None, :])
    return second - np.outer(m, m)


def ref_argmax_means(structure, params):
    """Float64 mean of the heaviest component per batch entry (per_dim: per dimension)."""
    logits, means, _ = f64(params)
    if structure == "per_dim":
        idx = np.argmax(logits, axis=-1)  # [..., D]
        return np.take_along_axis(means, idx[..., None], axis=-1)[..., 0]
    idx = np.argmax(logits, axis=-1)  # [...]
    return np.take_along_axis(means, idx[..., None, None], axis=-2)[..., 0, :]


def mixture_cdf_1d(weights, locs, scales, x):
    """CDF of a 1-D Gaussian mixture, float64."""
    x = np.asarray(x, dtype=np.float64)[:, None]
    return np.sum(weights * stats.norm.cdf(x, loc=locs, scale=scales), axis=-1)


def marginal_1d(structure, params, d):
    """Weights, locations and standard deviations of marginal `d` of an unbatched mixture."""
    w, mu, cov = ref_components(structure, params)
    sd = np.sqrt(cov[:, d, d])
    if structure == "per_dim":
        return w[d], mu[:, d], sd
    return w, mu[:, d], sd


# ---------------------------------------------------------------------------------------------
# Compiled entry points. Every XLA compile costs ~0.3-5 s of CPU here, so the tests share a few
# jitted functions and a few shapes; temperatures are always passed as traced arguments, so
# changing them recompiles nothing.


@pytest.fixture(autouse=True, scope="module")
def _non_partitionable_threefry():
    """Compile threefry in its non-partitionable form while this module runs.

    The default (partitionable) threefry lowering takes ~3x longer to compile on CPU; this
    changes which random bits a key produces, not the algorithm (still threefry2x32) and not
    anything `mdn_jax.sample` does with them. The previous setting is restored afterwards.
    """
    if not hasattr(jax, "threefry_partitionable"):  # older jax: nothing to switch
        yield
        return
    with jax.threefry_partitionable(False):
        yield


# Programs with little work to do are compiled with LLVM's cheap settings, which halves XLA's
# CPU compile time; IEEE arithmetic is unchanged (no fast-math). The sampler used for 200k
# draws keeps the default settings, under which it runs ~3x faster.
_QUICK = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
quick_jit = (
    functools.partial(jax.jit, compiler_options=_QUICK)
    if "compiler_options" in inspect.signature(jax.jit).parameters
    else jax.jit
)

_sample_jit = jax.jit(mdn.sample, static_argnames=("sample_shape",))
_sample_quick = quick_jit(mdn.sample, static_argnames=("sample_shape",))


def draw(key, mixture, sample_shape, temperature=1.0, sigma_temperature=1.0):
    """jit(mdn.sample) with the temperatures always traced (one compile per shape)."""
    if isinstance(key, int):
        key = jax.random.key(key)
    sampler = _sample_jit if math.prod(sample_shape) > 100_000 else _sample_quick
    return sampler(
        key,
        mixture,
        sample_shape=sample_shape,
        temperature=temperature,
        sigma_temperature=sigma_temperature,
    )


def _views(mixture, y):
    return dict(
        mean=mdn.mean(mixture),
        variance=mdn.variance(mixture),
        log_weights=mdn.log_weights(mixture),
        component_means=mdn.component_means(mixture),
        component_variances=mdn.component_variances(mixture),
        entropy=mdn.entropy_of_weights(mixture),
        responsibilities=mdn.responsibilities(mixture, y),
        most_probable_component=mdn.most_probable_component(mixture),
        most_probable_mean=mdn.most_probable_mean(mixture),
        select_2=mdn.select_component(mixture, 2),
        select_arr=mdn.select_component(mixture, jnp.arange(15).reshape(3, 5) % 4),
    )


_views_jit = quick_jit(_views)


# ---------------------------------------------------------------------------------------------
# 1. log_prob against scipy, for every structure, batch shape, K and D.
#
# modes 'jit' and 'vmap': jax.jit(log_prob) and jax.jit(jax.vmap(log_prob)) over the leading
# axis, for all 36 configurations (vmap: the 24 with a batch axis); the 12 configurations of a
# structure are compiled as one program (a module fixture) to pay XLA's per-program overhead
# once. Mode 'plain' (eager, op by op, which compiles every primitive separately and costs
# ~1.5 s of CPU per configuration) runs on one configuration per structure, chosen so that
# together they meet every batch shape, K in {1, 4} and D in {1, 3}.

BATCHES = [(), (7,), (3, 5)]
KD = [(1, 1), (1, 3), (4, 1), (4, 3)]
CONFIGS = [(b, k, d) for b in BATCHES for k, d in KD]
PLAIN = {("joint", (3, 5), 4, 3), ("per_dim", (7,), 1, 3), ("full", (), 4, 1)}


def _log_prob_case(structure, batch, K, D):
    rng = np.random.default_rng(zlib.crc32(repr((structure, batch, K, D)).encode()))
    params = make_params(structure, batch, K, D, rng)
    y = rng.normal(0.0, 2.5, batch + (D,)).astype(F32)
    return params, y


@quick_jit
def _log_prob_all(cases):
    out = []
    for mixture, y in cases:
        res = {"jit": mdn.log_prob(mixture, y), "nll": mdn.nll(mixture, y)}
        if y.ndim > 1:  # a leading batch axis to map over
            res["vmap"] = jax.vmap(mdn.log_prob)(mixture, y)
        out.append(res)
    return out


@pytest.fixture(scope="module")
def compiled_log_probs():
    cache = {}

    def get(structure):
        if structure not in cache:
            cases = [_log_prob_case(structure, *c) for c in CONFIGS]
            results = _log_prob_all([(build(structure, p), y) for p, y in cases])
            cache[structure] = dict(zip(CONFIGS, results))
        return cache[structure]

    return get


LOG_PROB_CASES = [
    pytest.param(s, b, k, d, mode, id=f"{s}-batch{list(b)}-K{k}-D{d}-{mode}")
    for s in STRUCTURES
    for b in BATCHES
    for k, d in KD
    for mode in ("plain", "jit", "vmap")
    if not (mode == "plain" and (s, b, k, d) not in PLAIN) and not (mode == "vmap" and b == ())
]


@pytest.mark.parametrize("structure,batch,K,D,mode", LOG_PROB_CASES)
def test_log_prob_matches_scipy(structure, batch, K, D, mode, compiled_log_probs):
    params, y = _log_prob_case(structure, batch, K, D)
    expected = ref_log_prob(structure, params, y)
    if mode == "plain":
        mixture = build(structure, params)
        assert mdn.structure(mixture) == structure
        assert (mdn.num_components(mixture), mdn.event_size(mixture)) == (K, D)
        assert mdn.batch_shape(mixture) == batch
        got = mdn.log_prob(mixture, y)
    else:
        results = compiled_log_probs(structure)[(batch, K, D)]
        got = results[mode]
        if mode == "jit":
            np.testing.assert_allclose(
                float(results["nll"]), -np.mean(expected), rtol=1e-5, atol=1e-5
            )
    got = np.asarray(got)
    assert got.shape == batch
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 2. Broadcasting of y's batch axes against the mixture's.


@pytest.mark.parametrize("structure", STRUCTURES)
def test_log_prob_broadcasts_y_batch_axes(structure):
    rng = np.random.default_rng(2)
    K, D = 3, 2
    params = make_params(structure, (7,), K, D, rng)
    mixture = build(structure, params)
    y = rng.normal(0.0, 2.5, (4, 7, D)).astype(F32)
    y1 = y[0, 0]
    got, got1 = quick_jit(lambda m, a, b: (mdn.log_prob(m, a), mdn.log_prob(m, b)))(mixture, y, y1)
    assert got.shape == (4, 7)
    tiled = tuple(np.broadcast_to(p, (4,) + p.shape) for p in params)
    np.testing.assert_allclose(
        np.asarray(got), ref_log_prob(structure, tiled, y), rtol=1e-5, atol=1e-5
    )
    assert got1.shape == (7,)  # a single y [D] against the batch [7]
    np.testing.assert_allclose(
        np.asarray(got1),
        ref_log_prob(structure, params, np.broadcast_to(y1, (7, D))),
        rtol=1e-5,
        atol=1e-5,
    )


# ---------------------------------------------------------------------------------------------
# 3a. Moments in closed form, and the other views, against numpy (batch (3, 5), K=4, D=3).


def _views_case(structure):
    rng = np.random.default_rng(4 + STRUCTURES.index(structure))
    params = make_params(structure, (3, 5), 4, 3, rng)
    y = rng.normal(0.0, 2.0, (3, 5, 3)).astype(F32)
    return params, y


@pytest.mark.parametrize("structure", STRUCTURES)
def test_moments_and_views_against_numpy(structure):
    params, y = _views_case(structure)
    mixture = build(structure, params)
    got = {k: np.asarray(v) for k, v in _views_jit(mixture, y).items()}
    # moments: sum_k w_k mu_k and sum_k w_k (sigma_k^2 + mu_k^2) - mean^2
    m_ref, v_ref = ref_moments(structure, params)
    assert got["mean"].shape == got["variance"].shape == (3, 5, 3)
    np.testing.assert_allclose(got["mean"], m_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["variance"], v_ref, rtol=1e-5, atol=1e-5)
    # weights, component views, entropy
    w, mu, cov = ref_components(structure, params)
    np.testing.assert_allclose(got["log_weights"], np.log(w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["component_means"], mu, rtol=1e-6)
    np.testing.assert_allclose(
        got["component_variances"], np.diagonal(cov, axis1=-2, axis2=-1), rtol=1e-5
    )
    h = -np.sum(w * np.log(w), axis=-1)
    np.testing.assert_allclose(
        got["entropy"], h.sum(-1) if structure == "per_dim" else h, rtol=1e-5, atol=1e-6
    )
    # responsibilities: posterior component probabilities, by explicit loops
    logits, means, third = f64(params)
    resp = np.empty(got["responsibilities"].shape)
    for b in np.ndindex(3, 5):
        if structure == "per_dim":
            for d in range(3):
                lj = np.log(w[b][d]) + stats.norm.logpdf(y[b][d], means[b][d], third[b][d])
                resp[b][d] = np.exp(lj - logsumexp(lj))
        else:
            lj = np.log(w[b]) + np.array(
                [stats.multivariate_normal.logpdf(y[b], mu[b][k], cov[b][k]) for k in range(4)]
            )
            resp[b] = np.exp(lj - logsumexp(lj))
    assert resp.shape == ((3, 5, 3, 4) if structure == "per_dim" else (3, 5, 4))
    np.testing.assert_allclose(got["responsibilities"], resp, rtol=1e-4, atol=1e-6)
    # select_component with a Python int and with an index array
    np.testing.assert_array_equal(got["select_2"], mu[..., 2, :].astype(F32))
    idx = np.arange(15).reshape(3, 5) % 4
    np.testing.assert_array_equal(
        got["select_arr"], np.take_along_axis(mu, idx[..., None, None], -2)[..., 0, :].astype(F32)
    )
    # 5. most_probable_component / most_probable_mean against numpy
    if structure == "per_dim":
        # weights: softmax per dimension, summed over dimensions; one index for every dimension
        idx = np.argmax(softmax(logits, axis=-1).sum(axis=-2), axis=-1)
        expected = np.empty((3, 5, 3))
        for b in np.ndindex(3, 5):
            expected[b] = means[b][:, idx[b]]
    else:
        idx = np.argmax(logits, axis=-1)
        expected = ref_argmax_means(structure, params)
    np.testing.assert_array_equal(got["most_probable_component"], idx)
    np.testing.assert_array_equal(got["most_probable_mean"], expected.astype(F32))


def _handmade_per_dim_logits():
    """[D=3, K=4] logits: dims 0 and 2 each prefer component 1, but summed weights prefer 0."""
    w = np.array([[0.45, 0.55, 0, 0], [0.999, 0.001, 0, 0], [0.45, 0.55, 0, 0]])
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(w), -1e4).astype(F32)


def test_most_probable_per_dim_hand_made():
    logits = _handmade_per_dim_logits()
    means = (np.arange(1, 4)[:, None] * np.array([1.0, -1.0, 5.0, 7.0])).astype(F32)  # [D, K]
    mixture = mdn.per_dim(logits, means, np.ones((3, 4), F32))
    got = quick_jit(lambda m: (mdn.most_probable_component(m), mdn.most_probable_mean(m)))(mixture)
    assert int(got[0]) == 0
    np.testing.assert_array_equal(np.asarray(got[1]), [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------------------
# 3b. Monte Carlo moments and KS tests; 4. temperatures. All large draws of a structure share
# one compiled sampler: an unbatched K=4, D=3 mixture, sample_shape (200_000,).

N_MC = 200_000
MC_K, MC_D = 4, 3


def _mc_params(structure):
    return make_params(
        structure, (), MC_K, MC_D, np.random.default_rng(100 + STRUCTURES.index(structure))
    )


def _mc_sample(key, structure, params, temperature=1.0, sigma_temperature=1.0):
    x = draw(key, build(structure, params), (N_MC,), temperature, sigma_temperature)
    assert x.shape == (N_MC, MC_D) and x.dtype == jnp.float32
    return np.asarray(x, dtype=np.float64)


@pytest.fixture(scope="module")
def mc_draws():
    """200k draws at temperature 1 from one unbatched K=4, D=3 mixture per structure."""
    cache = {}

    def get(structure):
        if structure not in cache:
            params = _mc_params(structure)
            x = _mc_sample(10 + STRUCTURES.index(structure), structure, params)
            cache[structure] = (params, build(structure, params), x)
        return cache[structure]

    return get


@pytest.mark.parametrize("structure", STRUCTURES)
def test_monte_carlo_moments(structure, mc_draws):
    """Sample mean / variance within 5 standard errors of mdn.mean / mdn.variance."""
    params, mixture, x = mc_draws(structure)
    m, v = quick_jit(lambda mx: (mdn.mean(mx), mdn.variance(mx)))(mixture)
    m, v = np.asarray(m, np.float64), np.asarray(v, np.float64)
    # mdn.mean / variance themselves against the float64 closed form (tested in depth above)
    m_ref, v_ref = ref_moments(structure, params)
    np.testing.assert_allclose(m, m_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-5)
    centred = x - x.mean(0)
    sv = np.mean(centred**2, axis=0)
    se_mean = np.sqrt(v / N_MC)
    se_var = np.sqrt((np.mean(centred**4, axis=0) - sv**2) / N_MC)
    assert np.all(np.abs(x.mean(0) - m) < 5 * se_mean), (x.mean(0), m, se_mean)
    assert np.all(np.abs(sv - v) < 5 * se_var), (sv, v, se_var)
    if structure == "full":  # the off-diagonal covariance follows L L^T (not L^T L)
        cov_ref = ref_full_covariance(params)
        scov = centred.T @ centred / N_MC
        prods = centred[:, :, None] * centred[:, None, :]
        se_cov = np.sqrt(np.mean(prods**2, axis=0) - scov**2) / np.sqrt(N_MC)
        assert np.all(np.abs(scov - cov_ref) < 5 * se_cov), (scov, cov_ref, se_cov)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_ks_marginals_of_3d_mixture(structure, mc_draws):
    params, _, x = mc_draws(structure)
    for d in range(MC_D):
        w, locs, sds = marginal_1d(structure, params, d)
        res = stats.kstest(x[:, d], lambda t: mixture_cdf_1d(w, locs, sds, t))
        assert res.pvalue > 1e-3, (d, res)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_ks_one_dimensional(structure):
    """D = 1 (for full, scale_tril is [K, 1, 1]); 50k draws against the weighted norm.cdf."""
    params = make_params(structure, (), 3, 1, np.random.default_rng(5))
    if structure == "full":
        assert params[2].shape == (3, 1, 1)
    x = np.asarray(draw(5, build(structure, params), (50_000,)), np.float64)
    assert x.shape == (50_000, 1)
    w, locs, sds = marginal_1d(structure, params, 0)
    res = stats.kstest(x[:, 0], lambda t: mixture_cdf_1d(w, locs, sds, t))
    assert res.pvalue > 1e-3, res
    # power: the same draws are rejected against a slightly shifted mixture
    assert stats.kstest(x[:, 0], lambda t: mixture_cdf_1d(w, locs + 0.1, sds, t)).pvalue < 1e-3


def _with_logits(structure, params, logits_shared, logits_per_dim):
    logits = logits_per_dim if structure == "per_dim" else logits_shared
    return (np.asarray(logits, F32),) + tuple(params[1:])


DESIGNED_SHARED = [2.0, 0.5, -0.5, -1.5]
DESIGNED_PER_DIM = [[2.0, 0.5, -0.5, -1.5], [-1.0, 1.5, 0.0, 0.3], [0.2, -0.4, 0.9, -2.0]]


def _component_counts(structure, params, draws):
    """Each draw's component, read off its exact (sigma_temperature=0) location:
    counts [rows, K]."""
    _, means, _ = f64(params)
    if structure == "per_dim":  # means [D, K], draws [n, D]
        dist = np.abs(draws[:, :, None] - means[None])  # [n, D, K]
        assert np.all(dist.min(-1) == 0)
        idx = np.argmin(dist, -1)
        return np.stack([np.bincount(idx[:, d], minlength=MC_K) for d in range(MC_D)])
    dist = np.abs(draws[:, None, :] - means[None]).sum(-1)  # [n, K]
    assert np.all(dist.min(-1) == 0)
    return np.bincount(np.argmin(dist, -1), minlength=MC_K)[None]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("structure", STRUCTURES)
def test_temperature_component_frequencies(structure, temperature):
    """Component frequencies follow softmax(logits / T) (chi-square, p > 1e-3); T > 1 flattens."""
    params = _with_logits(structure, _mc_params(structure), DESIGNED_SHARED, DESIGNED_PER_DIM)
    draws = _mc_sample(20, structure, params, temperature=temperature, sigma_temperature=0.0)
    counts = _component_counts(structure, params, draws)
    logits = np.atleast_2d(params[0].astype(np.float64))
    probs = softmax(logits / temperature, axis=-1)
    for c, p in zip(counts, probs):
        res = stats.chisquare(c, N_MC * p)
        assert res.pvalue > 1e-3, (c, N_MC * p, res)
    ent = lambda p: -np.sum(p * np.log(p), -1)  # noqa: E731
    freq, p1 = counts / N_MC, softmax(logits, axis=-1)
    if temperature > 1:
        assert np.all(ent(freq) > ent(p1) + 0.05)
    if temperature < 1:
        assert np.all(ent(freq) < ent(p1) - 0.05)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_small_temperature_picks_heaviest(structure):
    params = _with_logits(structure, _mc_params(structure), DESIGNED_SHARED, DESIGNED_PER_DIM)
    x = _mc_sample(21, structure, params, temperature=1e-3, sigma_temperature=0.0)
    expected = ref_argmax_means(structure, params)  # per_dim: each dimension's own heaviest
    np.testing.assert_array_equal(x.astype(F32), np.broadcast_to(expected.astype(F32), x.shape))


@pytest.mark.parametrize("structure", STRUCTURES)
def test_sigma_temperature_scales_noise(structure):
    """Same key: the draw at sigma_temperature=2 is loc + 2 (draw at 1 - loc)."""
    params = _mc_params(structure)
    loc = _mc_sample(22, structure, params, sigma_temperature=0.0)
    x1 = _mc_sample(22, structure, params, sigma_temperature=1.0)
    x2 = _mc_sample(22, structure, params, sigma_temperature=2.0)
    np.testing.assert_allclose(x2 - loc, 2 * (x1 - loc), rtol=1e-5, atol=2e-5)
    assert np.std(x2 - loc) > 0.5


@pytest.mark.parametrize("structure", STRUCTURES)
def test_sigma_temperature_doubles_std_of_single_component(structure):
    """One live component (the others at logit -1e4): sigma_temperature=2 doubles its std."""
    params = _with_logits(
        structure, _mc_params(structure), [0.0, -1e4, -1e4, -1e4], [[0.0, -1e4, -1e4, -1e4]] * MC_D
    )
    x = _mc_sample(23, structure, params, sigma_temperature=2.0)
    _, mu, cov = ref_components(structure, params)
    mu, cov = mu[0], cov[0]  # [D], [D, D]
    sd = np.sqrt(np.diagonal(cov))
    se_sd = 2 * sd / np.sqrt(2 * N_MC)  # standard error of a Gaussian sample std
    assert np.all(np.abs(x.std(0) - 2 * sd) < 5 * se_sd), (x.std(0), 2 * sd)
    assert np.all(np.abs(x.mean(0) - mu) < 5 * 2 * sd / np.sqrt(N_MC))
    c = np.cov(x.T)  # Gaussian sample covariance: SE sqrt((s_ii s_jj + s_ij^2) / n)
    se_c = 4 * np.sqrt((np.outer(np.diagonal(cov), np.diagonal(cov)) + cov**2) / N_MC)
    assert np.all(np.abs(c - 4 * cov) < 5 * se_c), (c, 4 * cov)


# 4 (cont.) and 8. Keys, shapes and vmap over keys, with a batched mixture: batch (5,), K=4,
# D=3, sample_shape (2, 3).

SMALL_SHAPE = (2, 3)


def _small_params(structure):
    params = make_params(
        structure, (5,), 4, 3, np.random.default_rng(30 + STRUCTURES.index(structure))
    )
    if structure == "per_dim":  # batch entry 0: the hand-made case where the two rules differ
        params[0][0] = _handmade_per_dim_logits()
    return params


@pytest.mark.parametrize("structure", STRUCTURES)
def test_zero_temperature_is_point_estimate(structure):
    params = _small_params(structure)
    mixture = build(structure, params)
    x = np.asarray(draw(0, mixture, SMALL_SHAPE, temperature=0.0, sigma_temperature=0.0))
    expected = ref_argmax_means(structure, params).astype(F32)  # per_dim: per dimension
    np.testing.assert_array_equal(x, np.broadcast_to(expected, SMALL_SHAPE + (5, 3)))
    mpm = np.asarray(quick_jit(mdn.most_probable_mean)(mixture))
    if structure == "per_dim":  # differs from most_probable_mean where dimensions disagree
        assert not np.array_equal(x[0, 0, 0], mpm[0])
        np.testing.assert_array_equal(x[0, 0, 0], params[1][0][[0, 1, 2], [1, 0, 1]])
    else:
        np.testing.assert_array_equal(x[0, 0], mpm)
    # any key gives the same
    other = draw(99, mixture, SMALL_SHAPE, temperature=0.0, sigma_temperature=0.0)
    np.testing.assert_array_equal(np.asarray(other), x)
    # temperature 1e-3 still picks the heaviest when logits are 0.5 apart
    logits, means, third = params
    sep = np.stack(
        [
            np.random.default_rng(i).permutation([0.0, 0.5, 1.0, 1.5])
            for i in range(int(np.prod(logits.shape[:-1])))
        ]
    ).reshape(logits.shape)
    sep_params = (sep.astype(F32), means, third)
    xs = draw(1, build(structure, sep_params), SMALL_SHAPE, temperature=1e-3, sigma_temperature=0.0)
    np.testing.assert_array_equal(
        np.asarray(xs),
        np.broadcast_to(ref_argmax_means(structure, sep_params).astype(F32), SMALL_SHAPE + (5, 3)),
    )


@pytest.mark.parametrize("structure", STRUCTURES)
def test_keys_and_sample_shape(structure):
    mixture = build(structure, _small_params(structure))
    a = draw(0, mixture, SMALL_SHAPE)
    b = draw(0, mixture, SMALL_SHAPE)
    c = draw(1, mixture, SMALL_SHAPE)
    assert a.shape == (2, 3, 5, 3)
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.any(np.asarray(a) == np.asarray(c))
    assert len(np.unique(np.asarray(a))) == a.size  # draws within one call differ too


@quick_jit
def _vmapped_sample(seed, mixture, temperature, sigma_temperature):
    keys = jax.random.split(jax.random.key(seed), 6)
    out = jax.vmap(
        lambda k: mdn.sample(
            k,
            mixture,
            sample_shape=SMALL_SHAPE,
            temperature=temperature,
            sigma_temperature=sigma_temperature,
        )
    )(keys)
    return keys, out


@pytest.mark.parametrize("structure", STRUCTURES)
def test_vmap_sample_over_keys(structure):
    params = _small_params(structure)
    mixture = build(structure, params)
    keys, out = _vmapped_sample(0, mixture, 1.0, 1.0)
    assert out.shape == (6,) + SMALL_SHAPE + (5, 3)
    out = np.asarray(out)
    assert np.all(np.isfinite(out))
    for i in (0, 5):  # each row is what the un-vmapped sampler gives for that key
        np.testing.assert_allclose(
            out[i], np.asarray(draw(keys[i], mixture, SMALL_SHAPE)), rtol=1e-6, atol=1e-6
        )
    assert not np.any(out[0] == out[1])
    _, det = _vmapped_sample(0, mixture, 0.0, 0.0)
    np.testing.assert_array_equal(
        np.asarray(det), np.broadcast_to(ref_argmax_means(structure, params).astype(F32), det.shape)
    )


# ---------------------------------------------------------------------------------------------
# 6. Extreme inputs: finite values and gradients, and agreement with float64.

EXT_K, EXT_D, EXT_B = 3, 2, 4
EXTREME_CASES = [
    "one_live_logit",
    "all_logits_dead",
    "tiny_scale_near",
    "tiny_scale_far",
    "huge_scale",
    "far_tail",
    "mixed_outlier",
]


def _extreme_params(structure, case):
    """(logits, means, scales-or-tril, y) for one extreme case, float32, batch [EXT_B]."""
    rng = np.random.default_rng(EXTREME_CASES.index(case))
    K, D, B = EXT_K, EXT_D, EXT_B
    logits = rng.normal(0.0, 1.0, (B, K))
    means = rng.normal(0.0, 2.0, (B, K, D))
    scale = np.ones((B, K, D))
    y = rng.normal(0.0, 2.0, (B, D))
    if case == "one_live_logit":  # every component but one at logit -1e4
        logits = np.full((B, K), -1e4)
        logits[:, 1] = 0.3
    elif case == "all_logits_dead":  # all at -1e4
        logits = np.full((B, K), -1e4)
    elif case == "tiny_scale_near":  # scale 1e-6, y within 2e-6 of a component mean
        scale = np.full((B, K, D), 1e-6)
        y = means[:, 0] + rng.uniform(-2e-6, 2e-6, (B, D))
    elif case == "tiny_scale_far":  # scale 1e-6, y ~1e3 away from every mean
        scale = np.full((B, K, D), 1e-6)
        y = np.full((B, D), 1e3)
    elif case == "huge_scale":  # scale 1e6
        scale = np.full((B, K, D), 1e6)
    elif case == "far_tail":  # scale 1, y ~1e4 away
        y = np.full((B, D), 1e4)
    elif case == "mixed_outlier":  # dead logits, scales 1e-6 / 1 / 1e6, y at -1e3
        logits = np.full((B, K), -1e4)
        logits[:, 0] = 0.0
        scale = np.stack([np.full((B, D), 1e-6), np.full((B, D), 1.0), np.full((B, D), 1e6)], 1)
        y = np.full((B, D), -1e3)
    else:
        raise AssertionError(case)
    if structure == "per_dim":  # [B, D, K], the same numbers for every dimension
        logits = np.repeat(logits[:, None, :], D, axis=1)
        return tuple(
            a.astype(F32) for a in (logits, np.swapaxes(means, 1, 2), np.swapaxes(scale, 1, 2), y)
        )
    if structure == "joint":
        return tuple(a.astype(F32) for a in (logits, means, scale, y))
    lower = np.tril(rng.normal(0.0, 0.1, (B, K, D, D)), k=-1)
    tril = scale[..., :, None] * (np.eye(D) + lower)  # row i scaled by scale_i
    return tuple(a.astype(F32) for a in (logits, means, tril, y))


def _lp_and_grads(structure):
    def total(logits, means, third, y):
        mixture = build(structure, (logits, means, third))
        lp = mdn.log_prob(mixture, y)
        aux = dict(
            lp=lp,
            resp=mdn.responsibilities(mixture, y),
            entropy=mdn.entropy_of_weights(mixture),
            mean=mdn.mean(mixture),
            variance=mdn.variance(mixture),
        )
        return jnp.sum(lp), aux

    return quick_jit(jax.value_and_grad(total, argnums=(0, 1, 2, 3), has_aux=True))


_EXTREME_FNS = {s: _lp_and_grads(s) for s in STRUCTURES}


@pytest.mark.parametrize("case", EXTREME_CASES)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_extreme_inputs(structure, case):
    logits, means, third, y = _extreme_params(structure, case)
    (total, aux), grads = _EXTREME_FNS[structure](logits, means, third, y)
    aux = {k: np.asarray(v) for k, v in aux.items()}
    lp = aux.pop("lp")
    for name, v in aux.items():  # the other views stay finite too
        assert np.all(np.isfinite(v)), (name, v)
    np.testing.assert_allclose(aux["resp"].sum(-1), 1.0, rtol=1e-5)
    assert lp.shape == (EXT_B,)
    assert np.all(np.isfinite(lp)), lp
    assert np.isfinite(float(total))
    for name, g in zip(("logits", "means", "scales/scale_tril", "y"), grads):
        assert np.all(np.isfinite(np.asarray(g))), (name, g)
    # float64 reference from the same float32 inputs; accurate in every case here
    expected = ref_log_prob(structure, (logits, means, third), y)
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(lp, expected, rtol=1e-5, atol=1e-4)
    # d log_prob / d logits = responsibilities - weights: sums to 0 over K
    g_logits = np.asarray(grads[0], np.float64)
    np.testing.assert_allclose(g_logits.sum(-1), 0.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 7. Constructor validation.


def test_constructors_reject_mismatched_shapes():
    K, D = 3, 2
    z = lambda *s: np.zeros(s, F32)  # noqa: E731
    o = lambda *s: np.ones(s, F32)  # noqa: E731
    bad = [
        (mdn.joint, (z(K + 1), z(K, D), o(K, D))),
        (mdn.joint, (z(K), z(K, D), o(K, D + 1))),
        (mdn.joint, (z(5, K), z(K, D), o(K, D))),  # no implicit broadcasting of batch axes
        (mdn.per_dim, (z(D, K), z(D, K + 1), o(D, K))),
        (mdn.per_dim, (z(D, K), z(D, K), o(K, D))),
        (mdn.per_dim, (z(K), z(D, K), o(D, K))),
        (mdn.full, (z(K), z(K, D), o(K, D, D + 1))),  # not square
        (mdn.full, (z(K), z(K, D), o(K, D + 1, D))),
        (mdn.full, (z(K + 1), z(K, D), o(K, D, D))),
        (mdn.full, (z(K), z(K, D), o(K, D))),  # scales instead of scale_tril
    ]
    for ctor, args in bad:
        with pytest.raises(ValueError):
            ctor(*args)
    # the matching shapes are accepted
    mdn.joint(z(K), z(K, D), o(K, D))
    mdn.per_dim(z(D, K), z(D, K), o(D, K))
    mdn.full(z(K), z(K, D), o(K, D, D))


def test_full_ignores_upper_triangle():
    tril = np.array([[[2.0, 99.0], [0.5, 1.0]]], F32)
    m = mdn.full(np.zeros(1, F32), np.zeros((1, 2), F32), tril)
    np.testing.assert_array_equal(np.asarray(m.scale_tril), [[[2.0, 0.0], [0.5, 1.0]]])
