"""Live training logs: `history.jsonl`, one JSON line per finished epoch, and TensorBoard.

A long run can be watched and plotted while it trains: each epoch's record (loss, held-out NLL,
samples/s, collapse diagnostics: whatever the trainer passes) is appended as one line, flushed
and fsynced before the next epoch starts, so a crash or Ctrl-C loses at most the epoch in
progress and never leaves a half line behind a complete one. On `--resume` from the checkpoint
of epoch E the file is first cut back to epochs 1..E (dropping later lines, which the resumed
run writes again, and any torn last line), so the file always matches the model it describes.

TensorBoard event files are written too (under `tensorboard/`) when `tensorboardX` is installed
(`pip install mdn_jax[tensorboard]`); it is never required.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from mdn_jax import media

HISTORY_NAME = "history.jsonl"
TENSORBOARD_FOLDER = "tensorboard"


def _clean(value):
    """JSON has no NaN or infinity: a non-finite float is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def read_history(path: str | os.PathLike) -> list[dict]:
    """The complete records in a history file, in order ([] when there is none).

    A last line without its newline (the process died while writing it) is not a record."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # only a torn write can make a line invalid; nothing after it is trusted
    return records


def truncate_history(
    path: str | os.PathLike, *, epochs: int, records: Sequence[dict] | None = None
) -> list[dict]:
    """Cut a history file back to the records of epochs 1..`epochs`, atomically; returns them.

    `records`: the history to keep instead of the file's own (e.g. the one stored in the
    checkpoint being resumed, which also restores a file that was deleted or never written)."""
    records = read_history(path) if records is None else records
    kept = [r for r in records if isinstance(r, dict) and r.get("epoch", 0) <= epochs]
    text = "".join(json.dumps(_clean(record)) + "\n" for record in kept)
    media.atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
    return kept


def tensorboard_writer(folder: str | os.PathLike, *, purge_step: int | None = None):
    """A `tensorboardX.SummaryWriter` logging to `folder`, or None when tensorboardX is absent.

    `purge_step`: on resume, the first epoch written again; TensorBoard hides older events
    from that step on, so the curves do not double back."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(logdir=str(folder), purge_step=purge_step)


class HistoryLog:
    """Appends one record per finished epoch to `folder/history.jsonl` (and TensorBoard).

    `resume_epoch`: the epoch a resumed run starts after (0 for a fresh run, which starts an
    empty file); `earlier`: the records of epochs 1..resume_epoch to start from (the resumed
    checkpoint's history; default: what the file holds). Use as a context manager, or call
    `close`.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        resume_epoch: int = 0,
        earlier: Sequence[dict] | None = None,
        tensorboard: bool = True,
    ):
        if not isinstance(resume_epoch, int) or resume_epoch < 0:
            raise ValueError(f"resume_epoch must be an integer >= 0, got {resume_epoch!r}")
        folder = Path(folder)
        self.path = folder / HISTORY_NAME
        kept = truncate_history(self.path, epochs=resume_epoch, records=earlier)
        self.last_epoch = max((r.get("epoch", 0) for r in kept), default=0)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.board = None
        if tensorboard:
            purge = resume_epoch + 1 if resume_epoch else None
            self.board = tensorboard_writer(folder / TENSORBOARD_FOLDER, purge_step=purge)

    def write(self, record: dict) -> None:
        """Append one epoch's record (a JSON-serialisable dict with an int `epoch` later than the
        last one written), flushed and fsynced; numeric fields also go to TensorBoard."""
        epoch = record.get("epoch")
        if not isinstance(epoch, int) or epoch <= self.last_epoch:
            raise ValueError(
                f"history records need an int epoch after {self.last_epoch}, got {epoch!r}; "
                "write each finished epoch once, in order"
            )
        self._file.write(json.dumps(_clean(record)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.last_epoch = epoch
        if self.board is not None:
            for name, value in record.items():
                if (
                    name != "epoch"
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    if math.isfinite(value):
                        self.board.add_scalar(name, value, global_step=epoch)
            self.board.flush()

    def close(self) -> None:
        self._file.close()
        if self.board is not None:
            self.board.close()

    def __enter__(self) -> HistoryLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
