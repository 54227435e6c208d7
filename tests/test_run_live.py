"""The run folder's issue-15 outputs from real CLI runs: history.jsonl written as training runs
(after a run, a Ctrl-C and a resume), reconstructions.png scored exactly as metrics.json's
coverage PSNR, and --holdout's held-out NLL per epoch and calibration."""

import contextlib
import io
import json
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from mdn_jax import checkpoint, cli, data, reconstruct, repeat, run_pictures, runs

TINY = [
    "--encoding",  # the reference settings, the default before the hash grid
    "identity",
    "--batch-size",
    "32",
    "--hidden",
    "8,8",
    "--components",
    "2",
    "--no-progress",
]
DIAGNOSTICS = ("effective_components", "unused_components", "scales_at_floor")


def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def _png(path, seed, size=8):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    iio.imwrite(path, pixels)
    return path


def _history(run):
    """history.jsonl's records; every line must be complete, valid JSON."""
    text = (run / "history.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def _assert_epoch_lines(run, epochs, *, held_out=False):
    records = _history(run)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    for record in records:
        assert np.isfinite(record["loss"]) and record["samples_per_second"] > 0
        for key in DIAGNOSTICS:
            assert key in record, key
        assert ("held_out_nll" in record) == held_out
        if held_out:
            assert np.isfinite(record["held_out_nll"])
    assert records == _metrics(run)["history"]  # the same records metrics.json keeps


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch run and the PSNRs its reconstructions.png was labelled with."""
    root = tmp_path_factory.mktemp("live")
    images = [_png(root / "a.png", 3), _png(root / "b.png", 4)]
    returned = []
    original = run_pictures.reconstructions_picture
    patch = pytest.MonkeyPatch()
    patch.setattr(
        run_pictures,
        "reconstructions_picture",
        lambda *a, **k: returned.append(original(*a, **k)[1]) or original(*a, **k),
    )
    try:
        code, out, err = _main("train", *images, "--epochs", "3", *TINY, "--out", root / "run")
    finally:
        patch.undo()
    assert code == 0, err
    assert "reconstructions.png" in out and "history.jsonl" in out
    return root, images, returned


def test_history_has_one_line_per_epoch(trained):
    root, _, _ = trained
    _assert_epoch_lines(root / "run", 3)


def test_reconstructions_score_the_coverage_psnr(trained):
    root, images, returned = trained
    run = root / "run"
    for name in ("reconstructions.png", "final_mode.png", "components.png", "loss.png"):
        assert iio.imread(run / name).ndim == 3, name
    assert not (run / "calibration.png").exists() and "calibration" not in _metrics(run)
    coverage = _metrics(run)["coverage_psnr"]
    assert returned == [coverage]  # the PSNRs written under the pictures
    graphdef, params, _, _ = runs.load_run(run)
    _, psnrs = reconstruct.reconstructions(graphdef, params, data.load_images(images))
    assert psnrs == coverage


def test_history_after_resume(trained):
    root, images, _ = trained
    shutil.copytree(root / "run", root / "resumed")
    code, _, err = _main(
        "train", *images, "--epochs", "5", *TINY, "--out", root / "resumed", "--resume"
    )
    assert code == 0, err
    _assert_epoch_lines(root / "resumed", 5)


def test_resume_from_an_older_checkpoint_cuts_the_history_back(trained, tmp_path):
    """Lines written after the last checkpoint (a killed run) are dropped, then written again."""
    root, images, _ = trained
    run = tmp_path / "run"
    common = [*TINY, "--checkpoint-every", "2", "--out", run]
    assert _main("train", *images, "--epochs", "2", *common)[0] == 0
    with open(run / "history.jsonl", "a") as stale:  # epochs a killed run logged, unsaved
        stale.write(json.dumps({"epoch": 3, "loss": 9.0}) + '\n{"epoch": 4, "lo')
    code, _, err = _main("train", *images, "--epochs", "4", *common, "--resume")
    assert code == 0, err
    _assert_epoch_lines(run, 4)
    assert _history(run)[2]["loss"] != 9.0


def test_history_after_ctrl_c_and_resume(tmp_path):
    import signal
    import time

    _png(tmp_path / "a.png", 1)
    command = [sys.executable, "-m", "mdn_jax.cli", "train", "a.png", "--epochs", "100000"]
    command += [*TINY, "--frame-every", "0", "--checkpoint-every", "0", "--out", "run"]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    history = tmp_path / "run" / "history.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if history.exists() and history.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    epochs = _metrics(tmp_path / "run")["epochs"]
    assert epochs >= 2 and checkpoint.latest_epoch(tmp_path / "run" / "checkpoint") == epochs
    _assert_epoch_lines(tmp_path / "run", epochs)
    code, _, err = _main(
        "train", tmp_path / "a.png", "--epochs", epochs + 1, *TINY, "--resume",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    _assert_epoch_lines(tmp_path / "run", epochs + 1)


def test_holdout_scores_each_epoch_and_calibrates(tmp_path):
    images = [_png(tmp_path / "a.png", 5), _png(tmp_path / "b.png", 6)]
    run = tmp_path / "run"
    args = ["train", *images, *TINY, "--out", run]
    code, out, err = _main(*args, "--epochs", "2", "--holdout", "0.25")
    assert code == 0, err
    _assert_epoch_lines(run, 2, held_out=True)
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["holdout"] == 0.25
    flags = repeat.config_flags(config)
    assert flags[flags.index("--holdout") + 1] == "0.25"
    metrics = _metrics(run)
    calibration = metrics["calibration"]
    assert calibration["observations"] == 32  # a quarter of the 2 x 8 x 8 pixels
    assert np.sum(calibration["pit_histogram"]) == 32 * 3
    assert set(calibration["coverage"]) and np.isfinite(calibration["crps_mean"])
    assert np.isfinite(metrics["held_out_nll"])
    assert iio.imread(run / "calibration.png").ndim == 3 and "calibration.png" in out
    # --resume without --holdout keeps the run's own split (same training pixels)
    code, _, err = _main(*args, "--epochs", "3", "--resume")
    assert code == 0, err
    _assert_epoch_lines(run, 3, held_out=True)
    assert _metrics(run)["calibration"]["observations"] == 32


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "x"])
def test_holdout_flag_errors(tmp_path, value):
    image = _png(tmp_path / "a.png", 7)
    code, _, err = _main("train", image, *TINY, "--holdout", value, "--out", tmp_path / "run")
    assert code != 0 and "holdout" in err and len(err.strip().splitlines()) <= 3
