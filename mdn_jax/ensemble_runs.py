"""An ensemble's training run on images (`mdn-jax train/demo --ensemble M`), in a run folder.

The members train side by side in one compiled call (`mdn_jax.stacked.fit_stacked`). The folder
is locked, written atomically and cleaned as a single model's (`mdn_jax.runs`), and holds:

    config.json    member 0's model and train settings as "model" and "train" (what a single
                   run holds), every member's as "members", M as "ensemble"
    metrics.json   "ensemble": the ensemble's scores (its mixture: the members' mixtures with
                   weights 1/M, so its NLL is minus the log-mean-exp over members of their
                   likelihoods); "members": each member's scores and per-member settings; the
                   per-epoch history with every member's loss
    history.jsonl  one line per finished epoch
    checkpoint/    stacked checkpoints (`mdn_jax.stacked_checkpoint`); --resume continues them
                   bit-identically
    reconstructions.png, uncertainty.png, loss.png
                   the ensemble's and each member's pictures (`mdn_jax.ensemble_pictures`),
                   written after metrics.json; one that cannot be made is skipped with one
                   line and listed in metrics.json as "skipped_pictures"
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mdn_jax import data as dt
from mdn_jax import (
    diskspace,
    ensemble_pictures,
    parallel,
    runlock,
    stacked,
    stacked_members,
    stacked_scores,
)
from mdn_jax import holdout as hd
from mdn_jax import run_callbacks as rc
from mdn_jax import stacked_checkpoint as sc
from mdn_jax import train as tr
from mdn_jax.checkpoint import CheckpointError, latest_epoch
from mdn_jax.run_folder import device_name, prepare_folder, versions, write_json


@runlock.holding_out_folder
@diskspace.reports_full_disk
def train_ensemble_on_images(
    images: np.ndarray,
    out: str | Path,
    *,
    model_configs,
    train_configs,
    options,
    resume: bool = False,
    data_info: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    devices: int | None = None,
) -> dict[str, Any]:
    """Train the members on `images [N, H, W, 3]` into the run folder `out`; the metrics dict."""
    out = Path(out)
    stacked_members.check_members(model_configs, train_configs)  # before any other check
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a run folder; pass a folder path as --out")
    images = np.asarray(images, np.float32)
    xs, ys = dt.image_pairs(images)
    seed = train_configs[0].seed
    xs, ys, held_out = hd.split_pairs(xs, ys, fraction=options.holdout, seed=seed)
    tr.check_batch_size(train_configs[0].batch_size, xs.shape[0], unit="training pixels")
    start_epoch, state, history = _resume_point(
        out, model_configs, train_configs, resume=resume, num_samples=xs.shape[0], log=log
    )
    (count, height, width), first = images.shape[:3], train_configs[0]
    log(
        f"training an ensemble of {len(model_configs)} on {count} image(s) of {height}x{width} "
        f"({count * height * width:,} pixels); {model_configs[0].components} "
        f"{model_configs[0].structure} components each, {first.epochs} epochs"
    )
    prepare_folder(out, resume=resume)
    settings = _settings(model_configs, train_configs, options, data_info or {}, devices)
    write_json(out / "config.json", settings)
    started = time.perf_counter()
    fit, history = _train(
        out, xs, ys, model_configs, train_configs, options, state, start_epoch, history, devices
    )
    interrupted = bool(history) and history[-1]["epoch"] < first.epochs
    if interrupted:
        log(
            f"interrupted: checkpoint saved at epoch {history[-1]['epoch']}; continue with --resume"
        )
    values = {
        **stacked_scores.scores(fit, *dt.image_pairs(images), held_out=held_out),
        "samples_per_second": _steady_speed(history),
        "epochs": history[-1]["epoch"] if history else 0,
        "seconds": round(sum(h["seconds"] for h in history), 3),
        "wall_seconds_this_session": round(time.perf_counter() - started, 3),
        "interrupted": interrupted,
        "device": device_name(),
        "devices": settings["devices"],
        "versions": versions(),
        "history": history,
    }
    write_json(out / "metrics.json", values)  # before any picture: a picture cannot cost it
    skipped = ensemble_pictures.write_pictures(out, fit, images, history)
    if skipped:
        values["skipped_pictures"] = skipped
        write_json(out / "metrics.json", values)
    return values


def _settings(model_configs, train_configs, options, data_info, devices) -> dict:
    return {
        "model": model_configs[0].to_dict(),
        "train": train_configs[0].to_dict(),
        "ensemble": len(model_configs),
        "members": [
            {"model": m.to_dict(), "train": t.to_dict()}
            for m, t in zip(model_configs, train_configs, strict=True)
        ],
        "run": dataclasses.asdict(options),
        "data": data_info,
        "devices": parallel.data_mesh(devices).devices.size,
        "processes": 1,
        "versions": versions(),
    }


def _steady_speed(history) -> float | None:
    steady = [h["samples_per_second"] for h in history[1:]] or [
        h["samples_per_second"] for h in history
    ]
    return round(statistics.median(steady), 1) if steady else None


@dataclasses.dataclass
class StackedCheckpoints:
    """A stacked checkpoint every `every` epochs (0: none between) and at the last epoch."""

    directory: Path
    every: int
    stop: rc.StopOnSignal
    history: rc.RunHistory
    model_configs: tuple
    train_configs: tuple
    num_samples: int

    def __call__(self, report: tr.EpochReport) -> None:
        last = report.epoch == self.train_configs[0].epochs or self.stop.now
        if last or (self.every and report.epoch % self.every == 0):
            sc.save_stacked(
                self.directory,
                state=report.state,
                model_configs=self.model_configs,
                train_configs=self.train_configs,
                epoch=report.epoch,
                history=self.history.records,
                num_samples=self.num_samples,
            )


def _file_record(record) -> dict:
    """A stacked record as the files keep it: rounded, NaN losses as None."""
    members = [round(v, 6) if math.isfinite(v) else None for v in record["member_losses"]]
    return {**rc.file_record(record), "member_losses": members}


class _EnsembleHistory(rc.RunHistory):
    def __call__(self, report: tr.EpochReport) -> None:
        self.records.append(_file_record(report.record))


def _train(
    out, xs, ys, model_configs, train_configs, options, state, start_epoch, history, devices
):
    """`(StackedFit, the run's history)` after training with the run's callbacks."""
    epochs = train_configs[0].epochs
    progress, task = rc.progress_bar(epochs, start_epoch, options.progress)
    history = _EnsembleHistory(history)
    live = rc.live_history(out, history, start_epoch=start_epoch, enabled=True)
    with rc.StopFlag() as flag, progress, live as live_history:
        stop = rc.StopOnSignal(flag, parallel.Placement())
        checkpoints = StackedCheckpoints(
            out / "checkpoint",
            every=options.checkpoint_every,
            stop=stop,
            history=history,
            model_configs=tuple(model_configs),
            train_configs=tuple(train_configs),
            num_samples=xs.shape[0],
        )

        def status(report):
            text = f"loss {report.loss:.4f}  {report.samples_per_second / 1e3:.0f}k samples/s"
            progress.update(task, completed=report.epoch, status=text)

        try:
            fit = stacked.fit_stacked(
                xs,
                ys,
                model_configs=model_configs,
                train_configs=train_configs,
                callbacks=[stop, status, history, live_history, checkpoints],
                normalise_inputs=False,
                state=state,
                start_epoch=start_epoch,
                devices=devices,
            )
        except tr.NonFiniteError as error:
            kept = latest_epoch(out / "checkpoint")
            where = (
                f"the checkpoint of epoch {kept} is kept: continue with --resume and one of "
                "those changes"
                if kept is not None
                else "no checkpoint was written yet: start again with one of those changes"
            )
            raise tr.NonFiniteError(f"{error}; {where}") from None
    return fit, history.records


def _resume_point(out, model_configs, train_configs, *, resume, num_samples, log):
    """`(start_epoch, state or None, history)`: a fresh start, or the latest checkpoint's."""
    checkpoint_dir = out / "checkpoint"
    latest = latest_epoch(checkpoint_dir)
    if not resume and latest is not None:
        raise CheckpointError(
            f"{out} already holds a trained run (checkpoint at epoch {latest}); "
            "pass --resume to continue it or choose a new --out folder"
        )
    if not resume:
        return 0, None, []
    if latest is None:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir}; start without --resume")
    if not sc.is_stacked(checkpoint_dir):
        raise CheckpointError(
            f"{out} holds a single model, not an ensemble; resume it without --ensemble"
        )
    restored = sc.restore_stacked(checkpoint_dir)
    if (
        restored.model_configs != tuple(model_configs)
        or _kept_settings(restored.train_configs) != _kept_settings(train_configs)
        or restored.num_samples != num_samples
    ):
        raise CheckpointError(
            f"{out} was trained with other ensemble settings; resume with the same images and "
            "flags or start a new --out folder"
        )
    rates = [t.learning_rate for t in train_configs]
    if [t.learning_rate for t in restored.train_configs] != rates:
        log(
            f"--lr {','.join(f'{r:g}' for r in rates)} replaces the checkpoint's rates: the run "
            "continues with the new rates, so it no longer equals an uninterrupted run"
        )
    log(f"resuming {out} from epoch {restored.epoch}")
    return restored.epoch, restored.state, list(restored.history)


# What must match for a resume to continue the same run (as for a single model in `runs`).
_RESUME_KEYS = ("seed", "schedule", "clip_norm", "batch_size", "loss")


def _kept_settings(train_configs) -> list:
    """Each member's settings that a resume must keep (the rate and epochs may change)."""
    return [tuple(getattr(t, k) for k in _RESUME_KEYS) for t in train_configs]


def load_ensemble_run(run_dir: str | Path) -> stacked.StackedFit | None:
    """The trained ensemble of a run folder as a `StackedFit`, or None for a single-model run
    (load that with `runs.load_run`)."""
    checkpoint_dir = Path(run_dir) / "checkpoint"
    try:  # config.json, written once at the start, says so without racing a running trainer
        config = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict) and "members" not in config:
        return None
    if not sc.is_stacked(checkpoint_dir):
        return None
    return sc.restore_stacked(checkpoint_dir).fit()
