"""history.jsonl: one valid line per finished epoch after a run, a crash, Ctrl-C and a resume."""

import json
import subprocess
import sys
import types

import pytest

from mdn_jax import history


def _record(epoch, loss=None):
    return {
        "epoch": epoch,
        "loss": -1.0 * epoch if loss is None else loss,
        "samples_per_second": 1000.0 + epoch,
        "effective_components": 3.5,
    }


def _lines(folder):
    """Every line of the file parsed strictly (so a torn or NaN line fails the test)."""
    text = (folder / history.HISTORY_NAME).read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_line_per_epoch_and_non_finite_values_as_null(tmp_path):
    with history.HistoryLog(tmp_path, tensorboard=False) as log:
        for epoch in (1, 2, 3):
            log.write(_record(epoch, loss=float("nan") if epoch == 2 else None))
            assert len(_lines(tmp_path)) == epoch  # on disk as soon as the epoch is written
    lines = _lines(tmp_path)
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines[1]["loss"] is None
    assert history.read_history(tmp_path / history.HISTORY_NAME) == lines
    # a new (not resumed) run in the same folder starts a new file
    with history.HistoryLog(tmp_path, tensorboard=False) as log:
        log.write(_record(1))
    assert [r["epoch"] for r in _lines(tmp_path)] == [1]


def test_epochs_must_come_once_and_in_order(tmp_path):
    with history.HistoryLog(tmp_path, tensorboard=False) as log:
        log.write(_record(1))
        for bad in (_record(1), {"loss": 1.0}, {"epoch": "2"}):
            with pytest.raises(ValueError, match="int epoch after 1"):
                log.write(bad)
    with pytest.raises(ValueError, match="resume_epoch must be an integer"):
        history.HistoryLog(tmp_path, resume_epoch=-1)


def test_ctrl_c_keeps_every_finished_epoch(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with history.HistoryLog(tmp_path, tensorboard=False) as log:
            for epoch in range(1, 10):
                log.write(_record(epoch))
                if epoch == 3:
                    raise KeyboardInterrupt
    assert [r["epoch"] for r in _lines(tmp_path)] == [1, 2, 3]


CRASH = """
import os, signal, sys
from mdn_jax import history
folder = sys.argv[1]
log = history.HistoryLog(folder, tensorboard=False)
for epoch in (1, 2, 3):
    log.write({"epoch": epoch, "loss": -epoch})
with open(os.path.join(folder, history.HISTORY_NAME), "a") as f:
    f.write('{"epoch": 4, "lo')  # killed in the middle of writing epoch 4
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_run_then_resume_keeps_the_file_consistent(tmp_path):
    done = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path)], timeout=120)
    assert done.returncode == -9
    assert [r["epoch"] for r in history.read_history(tmp_path / history.HISTORY_NAME)] == [1, 2, 3]
    # the newest checkpoint is of epoch 2: the resumed run drops epoch 3 and the torn line
    with history.HistoryLog(tmp_path, resume_epoch=2, tensorboard=False) as log:
        assert _lines(tmp_path) == [{"epoch": 1, "loss": -1}, {"epoch": 2, "loss": -2}]
        for epoch in (3, 4, 5):
            log.write(_record(epoch))
    assert [r["epoch"] for r in _lines(tmp_path)] == [1, 2, 3, 4, 5]
    assert _lines(tmp_path)[2] == _record(3)


def test_resume_from_the_checkpoints_history(tmp_path):
    earlier = [_record(1), _record(2), _record(3)]
    (tmp_path / history.HISTORY_NAME).write_text("not json\n")  # lost or damaged file
    with history.HistoryLog(tmp_path, resume_epoch=2, earlier=earlier, tensorboard=False) as log:
        log.write(_record(3, loss=7.0))
    assert _lines(tmp_path) == [_record(1), _record(2), _record(3, loss=7.0)]


def test_tensorboard_only_when_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails: not installed
    with history.HistoryLog(tmp_path) as log:
        assert log.board is None
        log.write(_record(1))
    events = []

    class SummaryWriter:
        def __init__(self, logdir, purge_step=None):
            events.append(("open", logdir, purge_step))

        def add_scalar(self, name, value, global_step):
            events.append((name, value, global_step))

        def flush(self):
            pass

        def close(self):
            events.append(("close",))

    monkeypatch.setitem(
        sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=SummaryWriter)
    )
    with history.HistoryLog(tmp_path, resume_epoch=1) as log:
        log.write(_record(2, loss=float("inf")) | {"note": "text", "skipped": True})
    assert events == [
        ("open", str(tmp_path / history.TENSORBOARD_FOLDER), 2),
        ("samples_per_second", 1002.0, 2),
        ("effective_components", 3.5, 2),
        ("close",),
    ]
    assert [r["epoch"] for r in _lines(tmp_path)] == [1, 2]
