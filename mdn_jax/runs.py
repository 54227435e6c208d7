"""A training run on images, in a run folder: progress, frames, checkpoints, final renders.

The folder's layout: see `mdn_jax.run_folder`. Every file is written under a temporary name
and renamed into place. Ctrl-C or SIGTERM stops after the current epoch, saves a checkpoint and
writes the outputs; a second one aborts at once (`mdn_jax.signals`). One run writes a folder at
a time (`mdn_jax.runlock`); a full disk ends in one line (`mdn_jax.diskspace`); metrics.json is
written before the pictures, and a picture that cannot be made is skipped
(`mdn_jax.safe_outputs`).

Devices and processes: training is data parallel over `devices` devices (None: all; see
`mdn_jax.parallel`). Under `jax.distributed.initialize()` every process runs this same function
on the same images: each trains on its share of the pixels, all take part in each checkpoint
(Orbax writes it once), and only process 0 writes frames, renders, config and metrics (and
logs). Every process can resume from the checkpoint.

A run killed outright (SIGKILL, power loss) leaves complete files and the last complete checkpoint;
`--resume` clears its temporaries and continues to the same parameters an uninterrupted run
reaches (tests/test_faults.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mdn_jax import checkpoint as ckpt
from mdn_jax import config as cfg
from mdn_jax import data as dt
from mdn_jax import diskspace, parallel, run_resume, runlock
from mdn_jax import holdout as hd
from mdn_jax import model as mdl
from mdn_jax import run_callbacks as rc
from mdn_jax import train as tr
from mdn_jax.run_folder import finish, prepare_folder, versions, write_json


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a run reports and saves (not what it learns).

    frame_every: epochs between montage frames (0: only the first and last epoch).
    checkpoint_every: epochs between checkpoints (one is always written at the end).
    samples: random draws shown in samples.png (per kind).
    progress: show a progress bar.
    holdout: share of the pixels (seeded by the training seed) kept out of training and
      scored each epoch (0: none).
    """

    frame_every: int = 10
    checkpoint_every: int = 25
    samples: int = 8
    progress: bool = True
    holdout: float = 0.0

    def __post_init__(self):
        hd.check_fraction(self.holdout)
        for name in ("frame_every", "checkpoint_every", "samples"):
            (cfg.positive_int if name == "samples" else cfg.non_negative_int)(
                name, getattr(self, name)
            )


def image_model_config(**overrides) -> mdl.ModelConfig:
    """A model config for (row, column) -> RGB with the image input normalisation.

    A hash grid spans the whole frame: its box (stored in the config) is the normalised image of
    the unit square, so pixel centres at any render resolution interpolate the same grid."""
    values = dict(
        in_features=2,
        out_features=3,
        input_offset=dt.IMAGE_INPUT_OFFSET,
        input_scale=dt.IMAGE_INPUT_SCALE,
        scale_floor=cfg.IMAGE_SCALE_FLOOR,
    )
    values.update(overrides)
    if values.get("encoding") == "hashgrid":
        offset, scale = np.asarray(values["input_offset"]), np.asarray(values["input_scale"])
        values.setdefault("hashgrid_low", tuple(((0.0 - offset) / scale).tolist()))
        values.setdefault("hashgrid_high", tuple(((1.0 - offset) / scale).tolist()))
    return mdl.ModelConfig(**values)


SPREAD_HEAD_SCALE = 0.1


def spread_init(images: np.ndarray, components: int) -> dict[str, Any]:
    """Model-config options that start K component means on colours spread over
    `images [N, H, W, 3]` (`model.spread_means`) and the head's weights at
    `SPREAD_HEAD_SCALE` of their usual size."""
    colours = np.asarray(images, np.float32).reshape(-1, np.shape(images)[-1])
    return dict(mean_init=mdl.spread_means(colours, components), head_init_scale=SPREAD_HEAD_SCALE)


@runlock.holding_out_folder
@diskspace.reports_full_disk
def train_on_images(
    images: np.ndarray,
    out: str | Path,
    *,
    model_config: mdl.ModelConfig,
    train_config: tr.TrainConfig,
    options: RunOptions = RunOptions(),
    resume: bool = False,
    data_info: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    devices: int | None = None,
    callbacks: Sequence[tr.Callback] = (),
) -> dict[str, Any] | None:
    """Train on `images [N, H, W, 3]` and fill the run folder `out`; returns the metrics dict
    (None on every process but process 0, which writes the files). `callbacks` run after the
    run's own after each epoch (see `mdn_jax.train.fit`)."""
    out = Path(out)
    images = np.asarray(images, np.float32)
    xs, ys, held_out = _training_pairs(images, options=options, train_config=train_config)
    placement = parallel.Placement.build(devices, batch_size=train_config.batch_size)
    main = parallel.is_main_process()
    log = log if main else _silent
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a run folder; pass a folder path as --out")
    run = _Run(out, images, model_config, train_config, options, placement, main, log, held_out)
    start_epoch, state, history = run_resume.resume_point(
        run, resume=resume, num_samples=xs.shape[0]
    )
    log(run.description())
    num_samples = xs.shape[0]
    if placement.processes > 1:  # this process trains on its own share of the pixels
        share = parallel.process_share(num_samples)
        xs, ys = xs[share], ys[share]
    if main:
        prepare_folder(out, resume=resume)
        write_json(out / "config.json", run.settings(data_info or {}))
    if start_epoch >= train_config.epochs:
        log(
            f"{out} already has {start_epoch} epochs; writing its outputs again (raise --epochs "
            "to train more; a cosine schedule is then stretched over the new total)"
        )
    run_seconds = time.perf_counter()
    result, history = run.train(
        xs, ys, state, start_epoch, history, num_samples=num_samples, callbacks=callbacks
    )
    interrupted = bool(history) and history[-1]["epoch"] < train_config.epochs
    if interrupted:
        log(
            f"interrupted: checkpoint saved at epoch {history[-1]['epoch']}; continue with --resume"
        )
    if not main:
        return None
    return run.outputs(result, history, started=run_seconds, interrupted=interrupted)


def _training_pairs(images: np.ndarray, *, options: RunOptions, train_config: tr.TrainConfig):
    """`(xs [P, 2], ys [P, 3], held_out)` of `images [N, H, W, 3]`: the training pixels, and the
    (xs, ys) of --holdout's pixels or None; the batch size must fit the training pixels."""
    xs, ys = dt.image_pairs(images)
    xs, ys, held_out = hd.split_pairs(xs, ys, fraction=options.holdout, seed=train_config.seed)
    tr.check_batch_size(train_config.batch_size, xs.shape[0], unit="training pixels")
    return xs, ys, held_out


@dataclasses.dataclass(frozen=True)
class _Run:
    """One run's settings, and the training with its run-folder callbacks."""

    out: Path
    images: np.ndarray  # [N, H, W, 3]
    model_config: mdl.ModelConfig
    train_config: tr.TrainConfig
    options: RunOptions
    placement: parallel.Placement
    main: bool  # this process writes the files
    log: Callable[[str], None]
    held_out: tuple[np.ndarray, np.ndarray] | None  # (xs, ys) of --holdout's pixels

    def description(self) -> str:
        """The run's first log line: data, devices, model and epochs."""
        (count, height, width), model = self.images.shape[:3], self.model_config
        return (
            f"training on {count} image(s) of {height}x{width} ({count * height * width:,} "
            f"pixels) on {self.placement.describe()}; {model.components} {model.structure} "
            f"components, {self.train_config.epochs} epochs"
            + (f", {model.dtype} trunk" if model.dtype != "float32" else "")
        )

    def settings(self, data_info: dict[str, Any]) -> dict[str, Any]:
        """config.json: model, training, run and data settings, devices and versions."""
        return {
            "model": self.model_config.to_dict(),
            "train": self.train_config.to_dict(),
            "run": dataclasses.asdict(self.options),
            "data": data_info,
            "devices": self.placement.devices,
            "processes": self.placement.processes,
            "versions": versions(),
        }

    def outputs(self, result, history, *, started: float, interrupted: bool) -> dict[str, Any]:
        """The run folder's final files (`run_folder.finish`) from the trained `result`, trained
        since `time.perf_counter()` read `started`; the metrics dict."""
        params = parallel.local(result.state.params)
        return finish(
            self.out,
            self.images,
            result.graphdef,
            params,
            self.model_config,
            history,
            self.options,
            seconds=time.perf_counter() - started,
            interrupted=interrupted,
            devices=self.placement.devices,
            held_out=self.held_out,
        )

    def train(self, xs, ys, state, start_epoch, history, *, num_samples, callbacks):
        """`(FitResult, the run's history)` after training with the run's callbacks, then
        `callbacks`; a NonFiniteError says where to continue from."""
        config = self.train_config
        progress, task = rc.progress_bar(
            config.epochs, start_epoch, self.options.progress and self.main
        )
        history = rc.RunHistory(history)
        live = rc.live_history(self.out, history, start_epoch=start_epoch, enabled=self.main)
        with rc.StopFlag() as flag, progress, live as live_history:
            stop = rc.StopOnSignal(flag, self.placement)
            frames = rc.Frames(
                self.images,
                self.out / "frames",
                every=self.options.frame_every,
                epochs=config.epochs,
                stop=stop,
                log=None if self.options.progress else self.log,  # no bar: a line per frame
            )
            checkpoints = rc.Checkpoints(
                self.out / "checkpoint",
                every=self.options.checkpoint_every,
                stop=stop,
                history=history,
                model_config=self.model_config,
                train_config=config,
                num_samples=num_samples,
            )
            grid = jax.device_put(dt.pixel_grid(*self.images.shape[1:3]))
            diagnostics = rc.Diagnostics(grid, self.model_config.scale_floor)
            ours = [stop, diagnostics] + ([rc.HeldOut(*self.held_out)] if self.held_out else [])
            ours += [rc.ProgressText(progress, task), history]
            ours += [live_history, frames, checkpoints] if self.main else [checkpoints]
            try:
                result = tr.fit_placed(
                    self.placement,
                    xs,
                    ys,
                    model_config=self.model_config,
                    train_config=config,
                    callbacks=[*ours, *callbacks],
                    normalise_inputs=False,
                    state=state,
                    start_epoch=start_epoch,
                )
            except tr.NonFiniteError as error:
                raise tr.NonFiniteError(
                    f"{error}; {run_resume.where_to_resume(self.out)}"
                ) from None
        return result, history.records


def _silent(message: str) -> None:
    """The log of every process but process 0."""


def load_run(run_dir: str | Path):
    """The trained model of a run folder: `(graphdef, params, model_config, metadata)`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ckpt.CheckpointError(
            f"{run_dir}: no such run folder; pass the --out folder of a training run"
        )
    restored = runlock.restore_newest(run_dir / "checkpoint")  # it may be training right now
    return restored.graphdef, restored.state.params, restored.model_config, restored
