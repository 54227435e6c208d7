"""Renders of a stacked fit (mdn_jax.ensemble_render): the ensemble's render methods against
float64 numpy computed from each member alone (`StackedFit.member`), and member renders."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mdn_jax import data, ensemble_render, render, stacked
from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax import train as tr

HEIGHT, WIDTH = 9, 13
M, K = 3, 2


@pytest.fixture(scope="module", params=["joint", "per_dim"])
def fit(request):
    """Three members of different widths and scale floors, two epochs on two tiny images."""
    images = data.demo_images(count=2, size=10)
    xs, ys = data.image_pairs(images)
    base = dict(
        components=K,
        structure=request.param,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    configs = [
        mdl.ModelConfig(hidden=(12, 8), scale_floor=0.01, **base),
        mdl.ModelConfig(hidden=(16, 6), scale_floor=0.02, **base),
        mdl.ModelConfig(hidden=(8, 8), scale_floor=0.01, **base),
    ]
    trains = [tr.TrainConfig(epochs=2, batch_size=40, seed=s) for s in range(M)]
    return stacked.fit_stacked(xs, ys, model_configs=configs, train_configs=trains)


def _members(fit):
    """Each member's float64 weights `[M, P, J]`, means and variances `[M, P, J, D]` at every
    pixel, J its joint components (per_dim: every choice of a component per channel, K^D)."""
    positions = data.pixel_grid(HEIGHT, WIDTH)
    weights, means, variances = [], [], []
    for m in range(M):
        mixture = fit.member(m).predict(positions)
        log_w, mu, scale = (np.asarray(a, np.float64) for a in mx.marginals(mixture))  # [P, D, K]
        if isinstance(mixture, mx.JointMixture):
            w = np.exp(log_w[:, 0, :])
            mu, var = np.swapaxes(mu, 1, 2), np.swapaxes(scale, 1, 2) ** 2
        else:  # independent channels: a joint component per (k_r, k_g, k_b)
            combos = np.array(np.meshgrid(*[range(K)] * 3, indexing="ij")).reshape(3, -1)
            d = np.arange(3)[:, None]
            w = np.exp(log_w[:, d, combos].sum(1))
            mu = np.swapaxes(mu[:, d, combos], 1, 2)
            var = np.swapaxes(scale[:, d, combos], 1, 2) ** 2
        weights.append(w)
        means.append(mu)
        variances.append(var)
    return np.stack(weights), np.stack(means), np.stack(variances)


def test_mean_and_uncertainty_are_the_ensemble_moments(fit):
    w, mu, var = _members(fit)
    member_mean = np.einsum("mpj,mpjd->mpd", w, mu)
    member_second = np.einsum("mpj,mpjd->mpd", w, var + mu**2)
    mean = member_mean.mean(0)
    variance = member_second.mean(0) - mean**2
    got = ensemble_render.render_values(fit, height=HEIGHT, width=WIDTH, method="mean")
    np.testing.assert_allclose(got.reshape(-1, 3), mean, atol=2e-5)
    spread = ensemble_render.render_values(fit, height=HEIGHT, width=WIDTH, method="uncertainty")
    np.testing.assert_allclose(spread.ravel(), np.sqrt(variance.mean(-1)), rtol=1e-4, atol=1e-5)


def test_mode_is_the_heaviest_component_of_all_members(fit):
    w, mu, _ = _members(fit)
    flat_w = np.moveaxis(w, 0, 1).reshape(w.shape[1], -1)  # [P, M * J], member-major
    flat_mu = np.moveaxis(mu, 0, 1).reshape(mu.shape[1], -1, 3)
    heaviest = flat_w.argmax(-1)
    clear = np.sort(flat_w, -1)[:, -1] - np.sort(flat_w, -1)[:, -2] > 1e-4  # no near-ties
    got = ensemble_render.render_values(fit, height=HEIGHT, width=WIDTH, method="mode")
    want = flat_mu[np.arange(len(heaviest)), heaviest]
    np.testing.assert_allclose(got.reshape(-1, 3)[clear], want[clear], atol=2e-5)
    assert clear.mean() > 0.9
    winners = ensemble_render.render_values(fit, height=HEIGHT, width=WIDTH, method="components")
    np.testing.assert_array_equal(winners.ravel()[clear], heaviest[clear])


def test_component_sample_and_pictures(fit):
    w, mu, _ = _members(fit)
    last = w.shape[0] * w.shape[2] - 1  # member M-1's last component
    got = ensemble_render.render_values(
        fit, height=HEIGHT, width=WIDTH, method="component", component=last
    )
    np.testing.assert_allclose(got.reshape(-1, 3), mu[-1, :, -1], atol=2e-5)
    with pytest.raises(ValueError, match=f"component must be in 0..{last}"):
        ensemble_render.render_values(
            fit, height=HEIGHT, width=WIDTH, method="component", component=last + 1
        )
    options = dict(height=HEIGHT, width=WIDTH, method="sample", key=jax.random.key(0))
    draws = ensemble_render.render_values(fit, num_samples=2, **options)
    assert draws.shape == (2, HEIGHT, WIDTH, 3) and np.all(np.isfinite(draws))
    assert ensemble_render.render(fit, coherent=True, **options).shape == (1, HEIGHT, WIDTH, 3)
    image = ensemble_render.render(fit, height=HEIGHT, width=WIDTH, method="components")
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.float32


def test_member_renders_that_member_alone_and_bad_members_are_one_line(fit):
    for m in (0, 2):
        own = fit.member(m)
        want = render.render(own.graphdef, own.params, height=HEIGHT, width=WIDTH)
        got = ensemble_render.render(fit, member=m, height=HEIGHT, width=WIDTH)
        np.testing.assert_array_equal(got, want)
    assert not np.allclose(
        ensemble_render.render_values(fit, member=0, height=HEIGHT, width=WIDTH, method="mean"),
        ensemble_render.render_values(fit, member=1, height=HEIGHT, width=WIDTH, method="mean"),
    )
    for bad in (M, -1):
        with pytest.raises(ValueError, match=f"members 0..{M - 1}") as info:
            ensemble_render.render(fit, member=bad, height=HEIGHT, width=WIDTH)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# `mdn-jax render RUN [--member m]` of a run trained with --ensemble.


def _main(*args):
    import contextlib
    import io

    from mdn_jax import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def test_cli_renders_the_ensemble_or_one_member(tmp_path):
    import imageio.v3 as iio

    from mdn_jax import ensemble_runs

    paths = []
    for seed in range(2):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        iio.imwrite(tmp_path / f"im{seed}.png", pixels)
        paths.append(tmp_path / f"im{seed}.png")
    run = tmp_path / "run"
    small = ("--components", "2", "--batch-size", "32", "--no-progress", "--epochs", "1")
    code, _, err = _main("train", *paths, "--out", run, *small, "--hidden", "8,8", "--ensemble", 2)
    assert code == 0, err
    fit = ensemble_runs.load_ensemble_run(run)

    code, out, err = _main("render", run, "--method", "mean", "--out", tmp_path / "ens.png")
    assert code == 0, err
    assert "ensemble of 2" in out
    want = ensemble_render.render(fit, height=8, width=8, method="mean")
    got = iio.imread(tmp_path / "ens.png")[..., :3]
    np.testing.assert_allclose(got, np.round(want * 255), atol=1)

    code, out, err = _main("render", run, "--member", 1, "--out", tmp_path / "one.png")
    assert code == 0, err
    assert "member 1 of 2" in out
    own = fit.member(1)
    want = render.render(own.graphdef, own.params, height=8, width=8)
    np.testing.assert_allclose(
        iio.imread(tmp_path / "one.png")[..., :3], np.round(want * 255), atol=1
    )

    code, _, err = _main(
        "render", run, "--method", "component", "--component", 4, "--out", tmp_path / "c.png"
    )
    assert code == 2 and "--component 4 does not exist" in err and "0..3" in err
    code, _, err = _main("render", run, "--member", 2, "--out", tmp_path / "m2.png")
    assert code == 2 and "--member 2 does not exist" in err and "members 0..1" in err
    assert len(err.strip().splitlines()) == 1

    single = tmp_path / "single"
    code, _, err = _main("train", *paths, "--out", single, *small, "--hidden", "8,8")
    assert code == 0, err
    code, _, err = _main("render", single, "--member", 0, "--out", tmp_path / "s.png")
    assert code == 2 and "--member applies to an ensemble run" in err
    assert len(err.strip().splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if p.name in ("c.png", "m2.png", "s.png")]
