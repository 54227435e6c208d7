"""Tests of mdn_jax.calibration: CRPS against scipy's numerical integration of its definition,
PIT and coverage against their definitions, and the JSON-ready metrics and picture."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats
from test_marginals import BATCHES, STRUCTURES, build, make_params, ref_cdf, ref_marginals

import mdn_jax as mdn
from mdn_jax import media


def ref_crps_1d(weights, means, scales, y):
    """Float64 CRPS by integrating its definition, int (F(x) - 1[x >= y])^2 dx, with scipy.

    The line is cut at y and around every component (mean +- 0, 1, 3, 8, 40 scales), so quad
    sees each sharp rise of F, however narrow.
    """
    F = lambda x: float(np.sum(weights * special.ndtr((x - means) / scales)))
    offsets = np.array([-40, -8, -3, -1, 0, 1, 3, 8, 40], np.float64)
    points = np.unique(np.concatenate([(means[:, None] + scales[:, None] * offsets).ravel(), [y]]))
    total = 0.0
    for a, b in zip(points[:-1], points[1:]):
        if b <= y:
            part = integrate.quad(lambda x: F(x) ** 2, a, b, epsabs=1e-13, epsrel=1e-10)[0]
        else:
            part = integrate.quad(lambda x: (1 - F(x)) ** 2, a, b, epsabs=1e-13, epsrel=1e-10)[0]
        total += part
    return total


def ref_crps(structure, params, y):
    weights, means, scales = ref_marginals(structure, params)
    y = np.broadcast_to(np.asarray(y, np.float64), means.shape[:-1])
    out = np.empty(y.shape)
    for index in np.ndindex(*y.shape):
        out[index] = ref_crps_1d(weights[index], means[index], scales[index], y[index])
    return out


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", BATCHES)
def test_crps_equals_numerical_integration(structure, batch):
    rng = np.random.default_rng(10)
    params = make_params(structure, batch, 3, 2, rng)
    y = rng.normal(0, 3, batch + (2,)).astype(np.float32)
    expected = ref_crps(structure, params, y)
    for fn in (mdn.crps, jax.jit(mdn.crps)):
        got = fn(build(structure, params), y)
        assert got.shape == batch + (2,)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize(
    "scale_range, spread, y_scale",
    [((1e-7, 1e-5), 1.0, 1.0), ((1e-7, 1.0), 1.0, 1.0), ((1e3, 1e6), 1e4, 1e5)],
    ids=["near-degenerate", "mixed", "huge"],
)
def test_crps_stable_for_tiny_and_huge_scales(structure, scale_range, spread, y_scale):
    rng = np.random.default_rng(11)
    params = make_params(structure, (3,), 3, 2, rng, scale_range=scale_range, spread=spread)
    y = rng.normal(0, y_scale, (3, 2)).astype(np.float32)
    got = np.asarray(mdn.crps(build(structure, params), y))
    assert np.all(np.isfinite(got)) and np.all(got >= -1e-6 * y_scale)
    # float32 cancellation between the two terms costs relative accuracy on the larger one
    np.testing.assert_allclose(got, ref_crps(structure, params, y), rtol=1e-4, atol=1e-6 * y_scale)


def test_crps_of_one_gaussian_is_the_closed_form():
    """Gneiting & Raftery (2007):
    CRPS(N(m, s^2), y) = s [z(2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]."""
    y = np.array([-3.0, 0.0, 0.5, 40.0], np.float32)
    mixture = mdn.per_dim(jnp.zeros((4, 1)), jnp.full((4, 1), 0.5), jnp.full((4, 1), 2.0))
    z = (y.astype(np.float64) - 0.5) / 2.0
    expected = 2.0 * (
        z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi)
    )
    np.testing.assert_allclose(mdn.crps(mixture, y[:, None])[:, 0], expected, rtol=1e-5)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_crps_under_vmap_and_its_gradient_is_finite(structure):
    rng = np.random.default_rng(12)
    params = make_params(structure, (4,), 3, 2, rng, scale_range=(1e-6, 1.0))
    mixture = build(structure, params)
    y = rng.normal(0, 2, (4, 2)).astype(np.float32)
    np.testing.assert_allclose(
        jax.vmap(mdn.crps)(mixture, y), mdn.crps(mixture, y), rtol=1e-6, atol=1e-7
    )
    grads = jax.jit(jax.grad(lambda m: jnp.sum(mdn.crps(m, y))))(mixture)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("structure", STRUCTURES)
def test_pit_is_the_marginal_cdf_and_coverage_counts_central_intervals(structure):
    rng = np.random.default_rng(13)
    params = make_params(structure, (50,), 3, 2, rng)
    mixture = build(structure, params)
    y = rng.normal(0, 3, (50, 2)).astype(np.float32)
    expected_pit = ref_cdf(ref_marginals(structure, params), y)
    np.testing.assert_allclose(mdn.pit(mixture, y), expected_pit, rtol=1e-5, atol=1e-6)
    inside = np.abs(expected_pit - 0.5)[None] <= np.array([0.25, 0.45])[:, None, None]
    got = mdn.coverage(mixture, y)
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got, inside.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_a_model_is_calibrated_on_its_own_samples(structure):
    """Observations drawn from the mixture itself: PIT uniform, coverage at the nominal level."""
    rng = np.random.default_rng(14)
    params = make_params(structure, (4000,), 3, 2, rng)
    mixture = build(structure, params)
    y = mdn.sample(jax.random.key(0), mixture)
    metrics = mdn.calibration_metrics(mixture, y, bins=10)
    json.dumps(metrics)  # JSON-ready: plain floats, ints and lists
    assert metrics["observations"] == 4000
    counts = np.array(metrics["pit_histogram"])
    assert counts.shape == (2, 10) and np.all(counts.sum(axis=1) == 4000)
    # each bin holds Binomial(4000, 0.1): mean 400, sd 19; 5 sd
    assert np.all(np.abs(counts - 400) < 95), counts
    for level in (0.5, 0.9):  # 8000 values: sd at most 0.0056 (0.5), 0.0034 (0.9); 5 sd
        assert metrics["coverage"][f"{level:g}"] == pytest.approx(level, abs=0.028)
        assert len(metrics["coverage_per_dim"][f"{level:g}"]) == 2
    assert metrics["crps_mean"] == pytest.approx(np.mean(metrics["crps_per_dim"]))
    assert metrics["crps_mean"] == pytest.approx(float(jnp.mean(mdn.crps(mixture, y))), rel=1e-5)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_calibration_metrics_in_chunks_equal_all_at_once(structure):
    rng = np.random.default_rng(17)
    params = make_params(structure, (6, 5), 3, 2, rng)  # two batch axes, flattened
    mixture = build(structure, params)
    y = rng.normal(0, 2, (6, 5, 2)).astype(np.float32)
    whole = mdn.calibration_metrics(mixture, y)
    chunked = mdn.calibration_metrics(mixture, y, rows_per_chunk=7)
    assert whole["pit_histogram"] == chunked["pit_histogram"]
    assert whole["coverage_per_dim"] == chunked["coverage_per_dim"]
    np.testing.assert_allclose(whole["crps_per_dim"], chunked["crps_per_dim"], rtol=1e-6)
    np.testing.assert_allclose(
        whole["crps_per_dim"], ref_crps(structure, params, y).reshape(-1, 2).mean(0), rtol=1e-4
    )
    expected = np.asarray(mdn.coverage(mixture, y)).mean(axis=1)  # the public function agrees
    np.testing.assert_allclose(list(whole["coverage"].values()), expected, atol=1e-6)
    # one mixture row against several observations: the batch axes broadcast
    one = jax.tree_util.tree_map(lambda a: a[:1, :1], mixture)
    assert mdn.calibration_metrics(one, y)["observations"] == 30


def test_a_too_narrow_model_is_overconfident():
    rng = np.random.default_rng(15)
    params = make_params("joint", (3000,), 2, 1, rng)
    y = mdn.sample(jax.random.key(1), build("joint", params))
    narrow = build("joint", (params[0], params[1], params[2] * 0.3))
    metrics = mdn.calibration_metrics(narrow, y)
    assert metrics["coverage"]["0.5"] < 0.4 and metrics["coverage"]["0.9"] < 0.8
    counts = np.array(metrics["pit_histogram"][0])
    assert counts[0] + counts[-1] > 2 * counts[4:6].sum()  # PIT piles up at both ends


def test_calibration_metrics_rejects_bad_arguments():
    mixture = build("joint", make_params("joint", (2,), 2, 1, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        mdn.calibration_metrics(mixture, jnp.zeros((2, 1)), bins=0)
    with pytest.raises(ValueError, match=r"coverage level must lie in \(0, 1\)"):
        mdn.calibration_metrics(mixture, jnp.zeros((2, 1)), levels=(0.5, 1.0))
    with pytest.raises(ValueError, match="rows_per_chunk must be a positive integer"):
        mdn.calibration_metrics(mixture, jnp.zeros((2, 1)), rows_per_chunk=0)


def test_calibration_chart_draws_the_metrics(tmp_path):
    rng = np.random.default_rng(16)
    params = make_params("per_dim", (500,), 3, 3, rng)
    mixture = build("per_dim", params)
    y = mdn.sample(jax.random.key(2), mixture)
    metrics = mdn.calibration_metrics(mixture, y)
    chart = media.calibration_chart(metrics)
    assert chart.ndim == 3 and chart.shape[-1] == 3 and chart.dtype == np.float32
    assert 0.0 <= chart.min() and chart.max() <= 1.0
    assert np.array_equal(chart, media.calibration_chart(metrics))  # deterministic
    skewed = dict(metrics, pit_histogram=[[500] + [0] * 9] * 3)
    assert not np.array_equal(chart, media.calibration_chart(skewed))
    path = media.save_png(tmp_path / "calibration.png", chart)
    assert path.stat().st_size > 0
