"""`mdn-jax reproduce`: a tiny run end to end, continuing after a stop, the report's verdicts,
bad input."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
from test_cli import _main  # cli.main in-process: (exit code, stdout, stderr)

from mdn_jax import reproduce_report

TINY = ["--size", "16x16", "--no-progress", "--only", "one_image_k1,two_images_k1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "r"
    code, stdout, stderr = _main("reproduce", "--out", out, "--epochs", "1", *TINY)
    assert code == 0, stderr
    return out, stdout


def test_tiny_reproduce_writes_report_with_every_chosen_experiment(tiny):
    out, stdout = tiny
    assert f"open {out}/report.md" in stdout
    text = (out / "report.md").read_text()
    for name in ("one_image_k1", "two_images_k1"):
        metrics = json.loads((out / "runs" / name / "metrics.json").read_text())
        assert metrics["epochs"] == 1
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"{metrics['bits_per_channel']:.3f}" in row and f"{metrics['nll_nats']:.3f}" in row
        assert f"report_files/{name}_mode.png" in row and f"report_files/{name}_montage.gif" in row
        assert iio.imread(out / "report_files" / f"{name}_mode.png").shape == (16, 16, 3)
        gif = iio.imread(out / "report_files" / f"{name}_montage.gif", index=None)
        assert gif.ndim == 4 and gif.shape[0] >= 1
        assert f"### `{name}`" in text
    assert (
        "two_images_k10" not in text.split("## Results")[1].split("## Experiments")[0]
    )  # not chosen
    assert "K=1 vs K=10 on two images: not run" in text  # its partner did not run: no verdict
    assert "## What it would take to reach 30 dB" in text
    assert "cpu" in text and "jax " in text  # device and versions


def test_rerun_reuses_finished_runs_and_more_epochs_continue_them(tiny, tmp_path):
    out, _ = tiny
    before = (out / "runs" / "one_image_k1" / "metrics.json").read_text()
    code, stdout, stderr = _main("reproduce", "--out", out, "--epochs", "1", *TINY)
    assert code == 0, stderr
    assert stdout.count("already finished") == 2
    assert (out / "runs" / "one_image_k1" / "metrics.json").read_text() == before
    code, stdout, stderr = _main(
        "reproduce",
        "--out",
        out,
        "--epochs",
        "2",
        "--size",
        "16x16",
        "--no-progress",
        "--only",
        "one_image_k1",
    )
    assert code == 0, stderr
    assert "resuming" in stdout
    history = json.loads((out / "runs" / "one_image_k1" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def _metrics(bits, nll, coverage):
    return {
        "bits_per_channel": bits,
        "nll_nats": nll,
        "coverage_psnr": coverage,
        "component_psnr": coverage,
        "epochs": 3,
        "seconds": 1.0,
        "samples_per_second": 1e3,
        "history": [],
    }


def test_findings_say_yes_only_when_the_numbers_agree():
    good = {
        "two_images_k1": _metrics(4.0, -5.0, [20.0, 20.0]),
        "two_images_k10": _metrics(3.0, -8.0, [30.0, 31.0]),
        "per_dim_k10": _metrics(3.8, -8.0, [20.0] * 5),
        "joint_k10": _metrics(3.5, -9.0, [24.0] * 5),
        "fourier": _metrics(3.2, -9.5, [26.0] * 5),
    }
    lines = reproduce_report.findings(good)
    assert all(line.endswith("**yes**") for line in lines), lines
    assert "`fourier`" in lines[-1]  # the best by bits per channel
    bad = dict(
        good,
        two_images_k10=_metrics(4.1, -5.0, [30.0, 31.0]),
        fourier=_metrics(3.6, -9.5, [24.9] * 5),
    )
    verdicts = [line.rsplit(" ", 1)[-1] for line in reproduce_report.findings(bad)]
    assert verdicts == [
        "**no**",
        "**yes**",
        "**no**",
        "**no**",
    ]  # best is joint_k10 at 24 dB: below 25


@pytest.mark.parametrize(
    "args, words",
    [
        (["--only", "nonsense"], ["unknown experiment", "nonsense", "one_image_k1"]),
        (["--only", ","], ["--only names no experiment", "one_image_k1"]),
        (["--full", "--epochs", "3"], ["--full and --epochs"]),
        (["--epochs", "0"], ["--epochs"]),
        (["--size", "100000x100000"], ["--size 100000x100000", "smaller --size"]),
        (["--size", "8x8"], ["64 pixels", "batch size 200", "larger --size"]),
    ],
)
def test_bad_reproduce_input_is_one_line_exit_2_nothing_written(tmp_path, args, words):
    code, _, stderr = _main("reproduce", "--out", tmp_path / "r", "--no-progress", *args)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mdn-jax: error: "), stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "r").exists()


def test_one_image_is_refused(tmp_path):
    iio.imwrite(tmp_path / "a.png", np.zeros((16, 16, 3), np.uint8))
    code, _, stderr = _main(
        "reproduce", tmp_path / "a.png", "--out", tmp_path / "r", "--no-progress"
    )
    assert code == 2 and "at least two images" in stderr, stderr
    assert not (tmp_path / "r").exists()
