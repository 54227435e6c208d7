"""`mdn-jax train --ensemble M` and per-member lists: one run folder for M stacked members."""

import contextlib
import io
import json

import imageio.v3 as iio
import jax
import numpy as np
import pytest
from scipy.special import logsumexp

from mdn_jax import cli, ensemble_runs
from mdn_jax import data as dt
from mdn_jax import mixture as mx
from mdn_jax import stacked_checkpoint as sc


def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def images(tmp_path):
    paths = []
    for seed in range(2):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        iio.imwrite(tmp_path / f"im{seed}.png", pixels)
        paths.append(tmp_path / f"im{seed}.png")
    return paths


SMALL = ("--components", "3", "--batch-size", "32", "--no-progress", "--hidden", "8,8")


def test_ensemble_run_folder_has_member_and_ensemble_scores(tmp_path, images):
    run = tmp_path / "run"
    code, out, err = _main(
        "train", *images, "--out", run, *SMALL, "--epochs", 2, "--ensemble", 3, "--holdout", 0.25
    )
    assert code == 0, err
    assert "\nensemble of 3: NLL " in out
    metrics = json.loads((run / "metrics.json").read_text())
    members, ensemble = metrics["members"], metrics["ensemble"]
    assert [m["seed"] for m in members] == [0, 1, 2]  # members differ by seed
    assert ensemble["members"] == 3 and len(metrics["history"][-1]["member_losses"]) == 3
    assert all(np.isfinite(m["held_out_nll"]) for m in [ensemble, *members])
    config = json.loads((run / "config.json").read_text())
    assert config["ensemble"] == 3 and len(config["members"]) == 3
    lines = (run / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    # The ensemble's NLL over every pixel (as a single run's nll_nats), recomputed in float64 from
    # the members' own log densities.
    fit = ensemble_runs.load_ensemble_run(run)
    assert fit.size == 3
    xs, ys = dt.image_pairs(np.stack([iio.imread(p) for p in images]).astype(np.float32) / 255)
    per_member = np.stack(
        [np.asarray(mx.log_prob(fit.member(m).predict(xs), ys), np.float64) for m in range(3)]
    )  # [M, N]
    expected = -np.mean(logsumexp(per_member, axis=0) - np.log(3))
    np.testing.assert_allclose(ensemble["nll_nats"], expected, rtol=1e-5)
    np.testing.assert_allclose(
        [m["nll_nats"] for m in members], -per_member.mean(axis=1), rtol=1e-5
    )
    assert ensemble["nll_nats"] <= np.mean([m["nll_nats"] for m in members])


def test_per_member_lists_resume_and_repeat_continue_bit_identically(tmp_path, images):
    flags = [*SMALL, "--lr", "1e-3,3e-3", "--scale-floor", "0.01,0.02"]
    flags += ["--hidden", "8,8/4,12"]
    # A constant rate: the image default's cosine decay spans --epochs, so a 2-epoch run resumed
    # to 3 follows another schedule than a 3-epoch run and is not meant to match it.
    flags += ["--schedule", "constant"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert _main("train", *images, "--out", whole, *flags, "--epochs", 3)[0] == 0
    assert _main("train", *images, "--out", part, *flags, "--epochs", 2)[0] == 0
    code, _, err = _main("train", *images, "--out", part, *flags, "--epochs", 3, "--resume")
    assert code == 0, err
    a, b = sc.restore_stacked(whole / "checkpoint"), sc.restore_stacked(part / "checkpoint")
    assert [c.hidden for c in a.model_configs] == [(8, 8), (4, 12)]
    assert [c.scale_floor for c in a.model_configs] == [0.01, 0.02]
    assert [c.learning_rate for c in a.train_configs] == [1e-3, 3e-3]
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    history = json.loads((part / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    # --config repeats the ensemble: the same members, trained to the same params.
    again = tmp_path / "again"
    code, _, err = _main("train", "--config", part / "config.json", "--out", again, "--no-progress")
    assert code == 0, err
    c = sc.restore_stacked(again / "checkpoint")
    assert c.model_configs == a.model_configs and c.train_configs == a.train_configs
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(c.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # A single-model resume of an ensemble's folder says what it is.
    code, _, err = _main("train", *images, "--out", part, *SMALL, "--epochs", 4, "--resume")
    assert code == 2 and "holds an ensemble; resume it with the same --ensemble" in err, err


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--lr", "1e-3,3e-3", "--ensemble", "3"), "--lr has 2 values but --ensemble is 3; "),
        (("--lr", "1e-3,3e-3", "--seed", "0,1,2"), "--seed has 3 values but --lr has 2; "),
        (("--hidden", "8,8/8"), "member 1 has 1 hidden layers and member 0 has 2; "),
        (("--scale-floor", "0.01,-1"), "argument --scale-floor: expected a positive number"),
        (("--seed", "1,x"), "argument --seed: expected a non-negative integer"),
    ],
)
def test_bad_member_lists_are_one_line_errors_with_exit_2(tmp_path, images, flags, message):
    run = tmp_path / "run"
    code, out, err = _main("train", *images, "--out", run, "--epochs", 1, "--no-progress", *flags)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not run.exists()
