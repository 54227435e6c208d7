"""Tests of mdn_jax.ensemble: M stacked members as one mixture of their average density, for
every structure, against an independent float64 numpy reference, under jit and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import mdn_jax as mdn
from mdn_jax import discretised, ensemble
from mdn_jax import mixture as mx
from mdn_jax.structures import per_dim as per_dim_structure

NAMES = ("joint", "per_dim", "full")


def make_stacked(structure, batch, K, D, rng, *, logit_scale=1.5, scale_range=(0.3, 2.0)):
    """Random float32 parameters (numpy) of a mixture of batch shape `batch`."""
    if structure == "per_dim":
        weights = locations = batch + (D, K)
    else:
        weights, locations = batch + (K,), batch + (K, D)
    logits = rng.normal(0.0, logit_scale, weights)
    means = rng.normal(0.0, 2.0, locations)
    scales = rng.uniform(*scale_range, locations)
    if structure == "full":
        third = np.tril(rng.normal(0.0, 0.5, locations + (D,)), k=-1)
        third = third + np.eye(D) * scales[..., None, :]
    else:
        third = scales
    return tuple(np.asarray(a, np.float32) for a in (logits, means, third))


def build(structure, params):
    return {"joint": mdn.joint, "per_dim": mdn.per_dim, "full": mdn.full}[structure](*params)


def reference_log_prob(structure, params, y):
    """float64 numpy log density of each mixture at y: `[...]` (written without mdn_jax)."""
    logits, means, third = (np.asarray(a, np.float64) for a in params)
    y = np.asarray(y, np.float64)
    log_w = logits - logsumexp(logits, axis=-1, keepdims=True)
    if structure == "per_dim":  # [..., D, K]
        lp = stats.norm.logpdf(y[..., :, None], means, third)
        return np.sum(logsumexp(log_w + lp, axis=-1), axis=-1)
    if structure == "joint":  # [..., K, D]
        lp = np.sum(stats.norm.logpdf(y[..., None, :], means, third), axis=-1)
        return logsumexp(log_w + lp, axis=-1)
    diff = np.broadcast_to(y[..., None, :], means.shape) - means  # full: [..., K, D]
    cov = third @ np.swapaxes(third, -1, -2)
    solved = np.linalg.solve(cov, diff[..., None])[..., 0]
    maha = np.sum(diff * solved, axis=-1)
    log_det = np.linalg.slogdet(cov)[1]
    d = y.shape[-1]
    return logsumexp(log_w - 0.5 * (maha + log_det + d * np.log(2 * np.pi)), axis=-1)


def reference_ensemble(structure, params, y, axis):
    """log (1/M) sum_m p_m(y): log-mean-exp over the member axis, float64."""
    members = reference_log_prob(structure, params, y)
    return logsumexp(members, axis=axis) - np.log(members.shape[axis])


# (batch shape of the stacked mixture, member axis, targets' batch shape)
CASES = [
    ((4,), 0, ()),
    ((5, 3), 1, (5,)),
    ((2, 3, 4), 1, (2, 4)),
]


@pytest.mark.parametrize("structure", NAMES)
@pytest.mark.parametrize("batch, axis, y_batch", CASES)
@pytest.mark.parametrize("jit", [False, True])
def test_log_prob_is_log_mean_exp_of_members(structure, batch, axis, y_batch, jit):
    rng = np.random.default_rng(len(batch) * 10 + axis)
    D, K = 3, 2
    params = make_stacked(structure, batch, K, D, rng)
    y = rng.normal(0.0, 2.0, y_batch + (D,)).astype(np.float32)
    y_members = np.expand_dims(y, axis) if y_batch else y  # broadcasts against the members

    def ensemble_log_prob(params, y):
        return mx.log_prob(ensemble.combine(build(structure, params), axis=axis), y)

    run = jax.jit(ensemble_log_prob) if jit else ensemble_log_prob
    got = np.asarray(run(params, y))
    want = reference_ensemble(structure, params, y_members, axis)
    assert got.shape == want.shape == y_batch
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("structure", NAMES)
def test_combined_mixture_shape_and_weights(structure):
    rng = np.random.default_rng(1)
    M, B, K, D = 4, 3, 2, 3
    combined = ensemble.combine(build(structure, make_stacked(structure, (M, B), K, D, rng)))
    assert mx.batch_shape(combined) == (B,)
    assert mx.event_size(combined) == D
    per_member = K**D if structure == "per_dim" else K  # per_dim multiplies out to K^D
    assert mx.num_components(combined) == M * per_member
    weights = np.exp(np.asarray(mx.log_weights(combined), np.float64))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    # each member keeps total weight 1/M (member-major component order)
    np.testing.assert_allclose(weights.reshape(B, M, per_member).sum(-1), 1.0 / M, rtol=1e-5)


@pytest.mark.parametrize("structure", NAMES)
def test_combine_under_vmap_equals_the_reference(structure):
    """vmap over a leading axis of points; the member axis is axis 0 inside."""
    rng = np.random.default_rng(2)
    P, M, K, D = 6, 3, 2, 2
    params = make_stacked(structure, (P, M), K, D, rng)
    y = rng.normal(0.0, 2.0, (P, D)).astype(np.float32)

    def one_point(params, y):
        return mx.log_prob(ensemble.combine(build(structure, params), axis=0), y)

    got = np.asarray(jax.jit(jax.vmap(one_point))(params, y))
    want = reference_ensemble(structure, params, y[:, None, :], 1)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("structure", NAMES)
def test_extreme_inputs_stay_finite_and_exact(structure):
    """Far targets (log densities near -1e6), saturated logits and tiny scales: log space all
    the way, so nothing underflows to -inf or turns NaN."""
    rng = np.random.default_rng(3)
    M, B, K, D = 3, 4, 3, 2
    params = make_stacked(structure, (M, B), K, D, rng, logit_scale=40.0, scale_range=(1e-3, 2e-3))
    y = np.stack([np.full(D, 3.0), np.full(D, -3.0), params[1][0, 2, ..., 0, :D], np.zeros(D)])
    if structure == "per_dim":
        y[2] = params[1][0, 2, :, 0]
    y = y.astype(np.float32)
    got = np.asarray(
        jax.jit(lambda p, y: mx.log_prob(ensemble.combine(build(structure, p)), y))(params, y)
    )
    want = reference_ensemble(structure, params, y, 0)
    assert np.all(np.isfinite(got)), got
    assert np.min(want) < -1e5  # the far targets really are extreme
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("structure", NAMES)
def test_ensemble_nll_is_at_most_the_members_average(structure):
    rng = np.random.default_rng(4)
    M, B, K, D = 5, 200, 2, 2
    params = make_stacked(structure, (M, B), K, D, rng)
    y = rng.normal(0.0, 2.0, (B, D)).astype(np.float32)

    @jax.jit
    def nlls(params, y):
        stacked = build(structure, params)
        return -jnp.mean(mx.log_prob(stacked, y), axis=-1), mx.nll(ensemble.combine(stacked), y)

    member_nll, ensemble_nll = (np.asarray(a, np.float64) for a in nlls(params, y))  # [M], []
    assert ensemble_nll <= np.mean(member_nll) + 1e-5
    assert ensemble_nll < np.min(member_nll)  # random members disagree: the average beats all


@pytest.mark.parametrize("structure", NAMES)
def test_samples_match_the_ensemble_mean_and_variance(structure):
    """Monte Carlo: 200,000 draws per point; the sample mean within 5 standard errors of the
    exact mean, the sample variance within 5% of the exact variance. Both exact moments are
    also checked against the members' (law of total variance over members, float64)."""
    rng = np.random.default_rng(5)
    M, B, K, D = 3, 2, 2, 2
    params = make_stacked(structure, (M, B), K, D, rng)
    n = 200_000

    @jax.jit
    def moments_and_draws(params):
        members = build(structure, params)
        combined = ensemble.combine(members)
        draws = mx.sample(jax.random.key(0), combined, sample_shape=(n,))
        return (
            mx.mean(members),
            mx.variance(members),
            mx.mean(combined),
            mx.variance(combined),
            draws,
        )

    got = [np.asarray(a, np.float64) for a in moments_and_draws(params)]
    member_mean, member_var, mean, variance, draws = got  # members [M, B, D]
    want_mean = member_mean.mean(0)
    want_var = (member_var + member_mean**2).mean(0) - want_mean**2
    np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(variance, want_var, rtol=1e-4, atol=1e-5)

    assert draws.shape == (n, B, D)
    stderr = np.sqrt(want_var / n)
    assert np.all(np.abs(draws.mean(0) - want_mean) < 5 * stderr)
    np.testing.assert_allclose(draws.var(0), want_var, rtol=0.05)


@pytest.mark.parametrize("structure", NAMES)
def test_downstream_functions_take_the_ensemble(structure):
    """Bits per channel is the log-mean-exp of the members' bin masses (exact for joint and
    per_dim, the same midpoint rule for full); marginal CDFs average the members' CDFs."""
    rng = np.random.default_rng(6)
    M, B, K, D = 3, 5, 2, 3
    params = make_stacked(structure, (M, B), K, D, rng, scale_range=(0.02, 0.2))
    for i, field in enumerate(params[1:2], 1):  # means inside [0, 1], where 8-bit data lives
        params = params[:i] + (1.0 / (1.0 + np.exp(-field)),) + params[i + 1 :]
    y = (rng.integers(0, 256, (B, D)) / 255.0).astype(np.float32)

    @jax.jit  # one compiled call: eager dispatch compiles every small op on its own (slow)
    def everything(params, y):
        stacked = build(structure, params)
        combined = ensemble.combine(stacked)
        return dict(
            member_mass=discretised.discretised_log_prob(stacked, y),
            mass=discretised.discretised_log_prob(combined, y),
            bits=mdn.bits_per_channel(combined, y),
            member_cdf=mdn.cdf(stacked, y),
            cdf=mdn.cdf(combined, y),
            mode=mx.most_probable_mean(combined),
            coherent=mdn.coherent_sample(jax.random.key(1), combined),
        )

    got = {k: np.asarray(v, np.float64) for k, v in everything(params, y).items()}
    want = logsumexp(got["member_mass"], axis=0) - np.log(M)
    np.testing.assert_allclose(got["mass"], want, rtol=1e-5, atol=1e-5)
    assert float(got["bits"]) == pytest.approx(-np.mean(want) / (D * np.log(2.0)), rel=1e-5)
    np.testing.assert_allclose(got["cdf"], got["member_cdf"].mean(0), atol=1e-5)  # [M, B, D]
    for point in (got["mode"], got["coherent"]):
        assert point.shape == (B, D) and np.all(np.isfinite(point))


def test_combine_refuses_with_one_line():
    rng = np.random.default_rng(7)
    single = build("joint", make_stacked("joint", (), 2, 2, rng))
    with pytest.raises(ValueError, match="no.*batch axis|has none") as info:
        ensemble.combine(single)
    assert "\n" not in str(info.value)
    stacked = build("joint", make_stacked("joint", (3, 4), 2, 2, rng))
    with pytest.raises(ValueError, match="axis 2 is not a batch axis.*0..1"):
        ensemble.combine(stacked, axis=2)
    assert mx.batch_shape(ensemble.combine(stacked, axis=-1)) == (3,)
    K, D = 10, 3
    members = per_dim_structure.MAX_COMBINED_COMPONENTS // K**D + 1
    big = build("per_dim", make_stacked("per_dim", (members,), K, D, rng))
    with pytest.raises(ValueError, match="joint components, more than") as info:
        ensemble.combine(big)
    assert "\n" not in str(info.value)


def test_exported_from_the_package():
    assert mdn.combine_members is ensemble.combine
    assert "combine_members" in mdn.__all__
    logits = jnp.zeros((2, 1))
    combined = mdn.combine_members(mdn.joint(logits, jnp.zeros((2, 1, 1)), jnp.ones((2, 1, 1))))
    assert mx.num_components(combined) == 2
