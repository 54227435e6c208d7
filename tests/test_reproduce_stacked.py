"""`mdn-jax reproduce`: the reference's trunk comparison also trained as ONE stacked call, its
time set against the three separate runs, its members' scores beside theirs."""

import json

import numpy as np
import pytest
from test_cli import _main  # cli.main in-process: (exit code, stdout, stderr)

from mdn_jax import reproduce_experiments

TRUNK_RUNS = [f"trunk_{'_'.join(map(str, w))}" for w in reproduce_experiments.TRUNKS]


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce_stacked") / "r"
    args = ["reproduce", "--out", out, "--epochs", "2", "--size", "16x16", "--no-progress"]
    code, stdout, stderr = _main(*args, "--only", "trunks_stacked")
    assert code == 0, stderr
    return out, stdout, args


def test_choosing_the_stacked_comparison_runs_the_separate_trunks_too(stacked_run):
    out, stdout, _ = stacked_run
    for name in [*TRUNK_RUNS, "trunks_stacked"]:
        assert (out / "runs" / name / "metrics.json").is_file(), name
    assert "3 members in one call" in stdout
    config = json.loads((out / "runs" / "trunks_stacked" / "config.json").read_text())
    assert [tuple(m["model"]["hidden"]) for m in config["members"]] == [
        tuple(w) for w in reproduce_experiments.TRUNKS
    ]
    assert {m["train"]["seed"] for m in config["members"]} == {0}  # each its own run's seed


def test_members_score_as_their_separate_runs_and_the_report_compares_times(stacked_run):
    out, _, _ = stacked_run
    stacked = json.loads((out / "runs" / "trunks_stacked" / "metrics.json").read_text())
    separate = [json.loads((out / "runs" / n / "metrics.json").read_text()) for n in TRUNK_RUNS]
    # The same models (same seed and batches) up to float rounding after two epochs.
    np.testing.assert_allclose(
        [m["bits_per_channel"] for m in stacked["members"]],
        [r["bits_per_channel"] for r in separate],
        rtol=1e-3,
    )
    assert stacked["ensemble"]["nll_nats"] <= np.mean([m["nll_nats"] for m in stacked["members"]])
    text = (out / "report.md").read_text()
    table = text.split("## Results")[1].split("## Experiments")[0]
    assert "| `trunks_stacked` |" not in table and all(f"| `{n}` |" in table for n in TRUNK_RUNS)
    paragraph = text.split("### `trunks_stacked`")[1].split("###")[0]
    total = sum(r["seconds"] for r in separate)
    assert f"{stacked['seconds']:.0f} s of training, against {total:.0f} s" in paragraph
    assert f"{total / stacked['seconds']:.2f}x as fast" in paragraph
    assert "an epoch after the first" in paragraph
    for name, member in zip(TRUNK_RUNS, stacked["members"]):
        assert f"`{name}` {member['bits_per_channel']:.3f} bits/channel" in paragraph
    assert f"{stacked['ensemble']['bits_per_channel']:.3f} bits/channel" in paragraph


def test_rerun_reuses_the_stacked_run(stacked_run):
    out, _, args = stacked_run
    before = (out / "runs" / "trunks_stacked" / "metrics.json").read_text()
    code, stdout, stderr = _main(*args, "--only", "trunks_stacked")
    assert code == 0, stderr
    assert stdout.count("already finished") == 4
    assert (out / "runs" / "trunks_stacked" / "metrics.json").read_text() == before
