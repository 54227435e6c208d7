"""The run folder's work after each epoch, one job per callback (see `mdn_jax.runs`).

`train_on_images` passes them to `mdn_jax.train.fit` in this order, each a callable taking the
epoch's `train.EpochReport`:

- `StopOnSignal`: Ctrl-C or SIGTERM (read once per epoch, agreed by every process) stops after
  this epoch;
- `Diagnostics`: adds the collapse diagnostics of the mixture over the pixel grid to the record;
- `ProgressText`: the progress bar's status line;
- `HeldOut`: with `--holdout`, the held-out pixels' NLL as `held_out_nll` in the record;
- `RunHistory`: the run's history, rounded for the files (metrics.json, checkpoints);
- `LiveHistory`: that epoch's record as one line of history.jsonl (`mdn_jax.history`);
- `Frames`: a montage frame of reconstructions (and a log line when there is no bar) every
  `frame_every` epochs;
- `Checkpoints`: a checkpoint every `checkpoint_every` epochs and at the last one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mdn_jax import checkpoint as ckpt
from mdn_jax import history as hs
from mdn_jax import media, metrics, parallel
from mdn_jax import model as mdl
from mdn_jax import run_pictures as rp
from mdn_jax import train as tr
from mdn_jax.signals import StopFlag as StopFlag  # SIGINT or SIGTERM


@dataclasses.dataclass
class StopOnSignal:
    """Stops training after an epoch in which Ctrl-C or SIGTERM arrived; `now` says so to the
    others."""

    flag: StopFlag
    placement: parallel.Placement
    now: bool = False

    def __call__(self, report: tr.EpochReport) -> bool:
        # Read once: a Ctrl-C during the later callbacks acts after the next epoch. With several
        # processes all stop together if any was asked to (a tiny all-gather per epoch).
        self.now = bool(self.placement.gather(np.array([self.flag.requested])).any())
        return self.now


@dataclasses.dataclass
class Diagnostics:
    """Adds `metrics.collapse_diagnostics` of the mixture at every training position."""

    grid: jax.Array  # [H * W, 2] pixel positions: the mixture depends on position only
    scale_floor: float

    def __call__(self, report: tr.EpochReport) -> dict[str, Any]:
        params = parallel.local(report.state.params)  # one device's copy, for this process
        mixture = _grid_mixture(report.graphdef, params, self.grid)
        return metrics.collapse_diagnostics(mixture, scale_floor=self.scale_floor)


@functools.partial(jax.jit, static_argnums=0)
def _grid_mixture(graphdef, params, grid):
    """The model's mixture at every training position, batch `[H * W]`."""
    return mdl.apply(graphdef, params, grid)


def _bar_status(record) -> str:
    return (
        f"loss {record['loss']:.4f}  {record['samples_per_second'] / 1e3:.0f}k samples/s  "
        f"K_eff {record['effective_components']:.1f}  unused {record['unused_components']}  "
        f"at floor {100 * record['scales_at_floor']:.0f}%"
    )


def _log_line(record, epochs: int) -> str:
    return (
        f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f} nats/pixel, "
        f"{record['samples_per_second'] / 1e3:.0f}k samples/s, effective components "
        f"{record['effective_components']:.1f}, unused {record['unused_components']}, "
        f"scales at floor {100 * record['scales_at_floor']:.0f}%"
    )


@dataclasses.dataclass
class ProgressText:
    """Moves the progress bar to the epoch and shows its loss, speed and diagnostics."""

    progress: Any  # rich.progress.Progress
    task: Any

    def __call__(self, report: tr.EpochReport) -> None:
        status = _bar_status(report.record)
        self.progress.update(self.task, completed=report.epoch, status=status)


def file_record(record) -> dict[str, Any]:
    """An epoch's history record as the run's files keep it: rounded, a NaN loss as None."""
    loss = record["loss"]
    return {
        **record,
        "loss": round(loss, 6) if loss is not None and math.isfinite(loss) else None,
        "seconds": round(record["seconds"], 4),
        "samples_per_second": round(record["samples_per_second"], 1),
    }


@dataclasses.dataclass
class RunHistory:
    """The run's history: the records restored from its checkpoint, then one per epoch."""

    records: list[dict[str, Any]]

    def __call__(self, report: tr.EpochReport) -> None:
        self.records.append(file_record(report.record))


@dataclasses.dataclass
class HeldOut:
    """Adds `held_out_nll`: the mean NLL (nats/pixel) of the pixels `--holdout` kept out."""

    xs: np.ndarray  # [M, 2] held-out positions
    ys: np.ndarray  # [M, 3] their colours

    def __call__(self, report: tr.EpochReport) -> dict[str, Any]:
        nll = tr.evaluate_nll(report.graphdef, report.state.params, self.xs, self.ys)
        return {rp.HELD_OUT_KEY: round(nll, 6) if math.isfinite(nll) else None}


@dataclasses.dataclass
class LiveHistory:
    """Appends the epoch's file record (the last of `history`) to history.jsonl."""

    log: hs.HistoryLog
    history: RunHistory

    def __call__(self, report: tr.EpochReport) -> None:
        self.log.write(self.history.records[-1])


@contextlib.contextmanager
def live_history(folder: Path, history: RunHistory, *, start_epoch: int, enabled: bool):
    """A `LiveHistory` on folder/history.jsonl, cut back to `start_epoch` (the resumed
    checkpoint's records) and closed however training ends; None when not `enabled`."""
    if not enabled:
        yield None
        return
    earlier = list(history.records)
    with hs.HistoryLog(folder, resume_epoch=start_epoch, earlier=earlier) as log:
        yield LiveHistory(log, history)


@dataclasses.dataclass
class Frames:
    """A montage frame (training images over their reconstructions) at the first epoch, every
    `every` epochs (0: none between) and the last; a log line with it when there is no bar."""

    images: np.ndarray  # [N, H, W, 3]
    folder: Path
    every: int
    epochs: int
    stop: StopOnSignal
    log: Callable[[str], None] | None  # None: the progress bar shows the same

    def __call__(self, report: tr.EpochReport) -> None:
        epoch = report.epoch
        last = epoch == self.epochs or self.stop.now
        if not (epoch == 1 or last or (self.every and epoch % self.every == 0)):
            return
        params = parallel.local(report.state.params)
        frame = rp.reconstruction_frame(
            report.graphdef, params, self.images, label=f"epoch {epoch}"
        )
        media.save_png(self.folder / f"epoch_{epoch:05d}.png", frame)
        if self.log is not None:
            self.log(_log_line(report.record, self.epochs))


@dataclasses.dataclass
class Checkpoints:
    """A checkpoint every `every` epochs (0: none between) and at the last epoch."""

    directory: Path
    every: int
    stop: StopOnSignal
    history: RunHistory
    model_config: mdl.ModelConfig
    train_config: tr.TrainConfig
    num_samples: int  # N the optimiser schedule was built for, across every process

    def __call__(self, report: tr.EpochReport) -> None:
        last = report.epoch == self.train_config.epochs or self.stop.now
        if last or (self.every and report.epoch % self.every == 0):
            ckpt.save(
                self.directory,
                state=report.state,
                model_config=self.model_config,
                train_config=self.train_config,
                epoch=report.epoch,
                history=self.history.records,
                num_samples=self.num_samples,
            )


def progress_bar(total: int, start: int, enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]epoch"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
    task = progress.add_task("train", total=total, completed=start, status="compiling...")
    return progress, task
