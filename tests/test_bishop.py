"""Bishop's inverse problem (examples/bishop_inverse.py): the exact optimum and a short
training run."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "examples" / "bishop_inverse.py"
_spec = importlib.util.spec_from_file_location("bishop_inverse", _PATH)
bishop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bishop)


@pytest.fixture(scope="module")
def test_x():
    _, (x, _) = bishop.make_data(10, test_size=5000)
    return x


def test_turning_points_split_g_into_monotone_branches():
    for lo, hi in bishop.BRANCHES:
        t = np.linspace(lo, hi, 10_001)
        diffs = np.diff(bishop.g(t))
        assert np.all(diffs > 0) or np.all(diffs < 0)
    slope = lambda t: 1.0 + 2.0 * math.pi * bishop.AMPLITUDE * math.cos(2.0 * math.pi * t)
    assert abs(slope(bishop.BRANCHES[0][1])) < 1e-12 and abs(slope(bishop.BRANCHES[1][1])) < 1e-12


def test_set_measure_matches_brute_force_grid(test_x):
    exact = bishop.set_measure(test_x)
    # Independent brute force: direct comparison (no sorting/searchsorted) on a 100k grid.
    t = (np.arange(100_000) + 0.5) / 100_000
    brute = np.array([np.mean(np.abs(x - bishop.g(t)) < bishop.NOISE) for x in test_x[:300]])
    np.testing.assert_allclose(exact[:300], brute, atol=3e-5)
    np.testing.assert_allclose(exact, bishop.grid_measure(test_x), atol=3 / 200_000)
    # Known values: away from the fold S(x) is one interval of length ~0.2 / g'(t).
    assert bishop.set_measure(np.array([-0.2, 1.2])).tolist() == [0.0, 0.0]
    assert np.all(exact > 0) and np.all(exact < 1)


def test_conditional_density_integrates_to_one(test_x):
    t = (np.arange(200_000) + 0.5) / 200_000
    for x in test_x[::250]:
        assert np.mean(bishop.conditional_density(t, x)) == pytest.approx(1.0, abs=5e-3)
    # p(x) = |S(x)| / 0.2 integrates to 1 as well.
    xs = np.linspace(-0.15, 1.15, 20_001)
    assert np.trapezoid(bishop.set_measure(xs) / 0.2, xs) == pytest.approx(1.0, abs=1e-4)


def test_optimum_matches_monte_carlo(test_x):
    verification = bishop.verify_optimum(test_x, mc_samples=50_000)
    assert verification["ok"], verification
    # Monte Carlo on fresh data agrees with the exact population optimum.
    assert verification["mc_optimum"] == pytest.approx(
        verification["population_optimum"], abs=4 * verification["mc_stderr"] + 2e-3
    )
    # The held-out optimum is a sample mean of the same quantity: within sampling error of it.
    assert bishop.optimal_nll(test_x) == pytest.approx(verification["population_optimum"], abs=0.05)
    # And it is -log of a density of a set shorter than (0, 1): well below 0.
    assert -1.4 < verification["population_optimum"] < -1.1


def test_gaussian_bound_is_well_above_optimum(test_x):
    # No single Gaussian can come within 0.5 nats of the optimum: K=1 is necessarily poor.
    assert bishop.gaussian_bound_nll(test_x) - bishop.optimal_nll(test_x) > 0.5


def test_short_training_orders_models():
    results = bishop.run(1000, ks=(1, 3), epochs=150, test_size=5000, verify=False, log=None)
    models = results["models"]
    assert models[3]["nll"] < models[1]["nll"] - 0.3
    assert models[1]["gap"] > 0.3
    assert models[3]["gap"] > -0.05  # nothing beats the Bayes optimum beyond sampling noise
    assert models[3]["gap"] < 0.35
    assert results["models"][1]["nll"] >= results["gaussian_bound"] - 0.05


def test_main_returns_zero_and_prints_table(capsys):
    assert bishop.main(["--ks", "3", "--epochs", "2", "--test-size", "500", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "held-out NLL" in out and "gap to optimum" in out
    # --check fails when the criteria cannot hold (two epochs, and K=1 cannot meet K>=3's bound).
    assert (
        bishop.main(["--ks", "1", "--epochs", "2", "--test-size", "500", "--no-verify", "--check"])
        == 1
    )
