"""examples/calibration_demo.py: held-out positions are never trained on; a short run writes
both files."""

import importlib.util
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

_PATH = Path(__file__).resolve().parents[1] / "examples" / "calibration_demo.py"
_spec = importlib.util.spec_from_file_location("calibration_demo", _PATH)
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def test_held_out_split_is_seeded_and_sized():
    mask = demo.held_out_split(128, 128, 0.1, 0)
    assert mask.shape == (128 * 128,) and mask.sum() == round(0.1 * 128 * 128)
    assert np.array_equal(mask, demo.held_out_split(128, 128, 0.1, 0))
    assert not np.array_equal(mask, demo.held_out_split(128, 128, 0.1, 1))


def test_a_one_epoch_run_writes_metrics_and_picture(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--epochs", "1"]) == 0
    metrics = json.loads((tmp_path / "calibration.json").read_text())
    positions = metrics["held_out_positions"]
    assert positions == round(0.1 * 128 * 128) and metrics["observations"] == 5 * positions
    assert all(sum(row) == 5 * positions for row in metrics["pit_histogram"])
    assert set(metrics["coverage"]) == {"0.5", "0.9"} and metrics["crps_mean"] > 0
    assert iio.imread(tmp_path / "calibration.png").ndim == 3
    assert "held-out CRPS" in capsys.readouterr().out
