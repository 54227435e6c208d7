"""A training run on images, in a run folder: progress, frames, checkpoints, final renders.

Layout of a run folder:

    config.json       model, training and data settings, versions
    metrics.json      scores (nll_nats, component_psnr, coverage_psnr, ...) and per-epoch history
    checkpoint/       Orbax checkpoints (params, optimiser state, epoch), newest kept
    frames/           one PNG per frame of the montage (training images beside the mode render)
    montage.gif       those frames as an animation
    final_mode.png    the mode render at training resolution
    components.png    one render per component, in a grid
    samples.png       random draws (temperature 1) in a grid
    uncertainty.png   predictive standard deviation, colour-mapped
    loss.png          the training curve

Every file is written under a temporary name and renamed into place. Ctrl-C or SIGTERM stops
after the current epoch, saves a checkpoint and writes the outputs; a second one aborts at once
(`mdn_jax.signals`). One run writes a folder at a time (`mdn_jax.runlock`); a full disk ends in
one line (`mdn_jax.diskspace`); metrics.json is written before the pictures, and a picture that
cannot be made is skipped (`mdn_jax.pictures`).

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
import functools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mdn_jax import checkpoint as ckpt
from mdn_jax import data as dt
from mdn_jax import diskspace, media, metrics, parallel, pictures, runlock, signals
from mdn_jax import model as mdl
from mdn_jax import render as rd
from mdn_jax import train as tr


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a run reports and saves (not what it learns).

    frame_every: epochs between montage frames (0: only the first and last epoch).
    checkpoint_every: epochs between checkpoints (one is always written at the end).
    samples: random draws shown in samples.png.
    progress: show a progress bar.
    """

    frame_every: int = 10
    checkpoint_every: int = 25
    samples: int = 8
    progress: bool = True

    def __post_init__(self):
        for name in ("frame_every", "checkpoint_every", "samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0 or (name == "samples" and value < 1):
                raise ValueError(
                    f"{name} must be a {'positive' if name == 'samples' else 'non-negative'} "
                    f"integer, got {value!r}"
                )


def versions() -> dict[str, str]:
    import flax
    import optax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}


def device_name() -> str:
    device = jax.devices()[0]
    return f"{device.platform}:{getattr(device, 'device_kind', '')}".rstrip(":")


def write_json(path: Path, values: dict) -> None:
    text = json.dumps(values, indent=2, sort_keys=False) + "\n"
    media.atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def image_model_config(**overrides) -> mdl.ModelConfig:
    """A model config for (row, column) -> RGB with the image input normalisation."""
    values = dict(
        in_features=2,
        out_features=3,
        input_offset=dt.IMAGE_INPUT_OFFSET,
        input_scale=dt.IMAGE_INPUT_SCALE,
        scale_floor=0.01,
    )
    values.update(overrides)
    return mdl.ModelConfig(**values)


SPREAD_HEAD_SCALE = 0.1


def spread_init(images: np.ndarray, components: int) -> dict[str, Any]:
    """Model-config options that start K component means on colours spread over `images [N, H, W, 3]`
    (`model.spread_means`) and the head's weights at `SPREAD_HEAD_SCALE` of their usual size."""
    colours = np.asarray(images, np.float32).reshape(-1, np.shape(images)[-1])
    return dict(mean_init=mdl.spread_means(colours, components), head_init_scale=SPREAD_HEAD_SCALE)


def _progress(total: int, start: int, enabled: bool):
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
    xs, ys = dt.image_pairs(images)
    tr.check_batch_size(train_config.batch_size, xs.shape[0], unit="training pixels")
    mesh = parallel.data_mesh(devices)
    parallel.check_batch_size(train_config.batch_size, mesh.devices.size)
    main = parallel.is_main_process()
    if not main:
        log = _silent
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a run folder; pass a folder path as --out")
    start_epoch, state, history = 0, None, []
    checkpoint_dir = out / "checkpoint"
    if not resume and ckpt.latest_epoch(checkpoint_dir) is not None:
        raise ckpt.CheckpointError(
            f"{out} already holds a trained run (checkpoint at epoch {ckpt.latest_epoch(checkpoint_dir)}); "
            "pass --resume to continue it or choose a new --out folder"
        )
    if resume:
        if ckpt.latest_epoch(checkpoint_dir) is None:
            raise ckpt.CheckpointError(f"no checkpoint in {checkpoint_dir}; start without --resume")
        restored = ckpt.restore(checkpoint_dir, mesh=mesh if mesh.devices.size > 1 else None)
        # The optimiser state's structure depends on schedule and clipping, and the batch order on
        # the data and batch size, so those must match for resume to equal an uninterrupted run.
        keys = ("seed", "schedule", "clip_norm", "batch_size", "loss")
        was = {
            **restored.model_config.to_dict(),
            **{k: getattr(restored.train_config, k) for k in keys},
            "training pixels": restored.num_samples,
        }
        now = {
            **model_config.to_dict(),
            **{k: getattr(train_config, k) for k in keys},
            "training pixels": xs.shape[0],
        }
        changed = [f"{k} {was[k]!r} (now {now[k]!r})" for k in was if was[k] != now.get(k)]
        if changed:
            raise ckpt.CheckpointError(
                f"{out} was trained with other settings: {', '.join(changed)}; resume with the same "
                "images and flags or start a new --out folder"
            )
        start_epoch, state, history = restored.epoch, restored.state, list(restored.history)
        if restored.train_config.learning_rate != train_config.learning_rate:
            log(_changed_rate(restored.train_config.learning_rate, train_config.learning_rate))
        if main:  # frames of epochs after this checkpoint belong to a run that was dropped
            media.remove_frames_after(out / "frames", start_epoch)
        log(f"resuming {out} from epoch {start_epoch}")
    log(
        f"training on {len(images)} image(s) of {images.shape[1]}x{images.shape[2]} ({xs.shape[0]:,} pixels) "
        f"on {parallel.describe(mesh)}; {model_config.components} {model_config.structure} components, "
        f"{train_config.epochs} epochs"
        + (f", {model_config.dtype} trunk" if model_config.dtype != "float32" else "")
    )
    num_samples = xs.shape[0]
    if mesh.devices.shape[0] > 1:  # this process trains on its own share of the pixels
        share = parallel.process_share(num_samples)
        xs, ys = xs[share], ys[share]
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if (
            not resume
        ):  # frames left by an earlier run that never checkpointed must not join the montage
            for stale in (out / "frames").glob("epoch_*.png"):
                stale.unlink()
        # A run killed mid-write leaves temporaries (never a file under its final name); clear them.
        for folder in (out, out / "frames"):
            media.remove_temporaries(folder)
        ckpt.remove_unfinished(checkpoint_dir)
        write_json(
            out / "config.json",
            {
                "model": model_config.to_dict(),
                "train": train_config.to_dict(),
                "run": dataclasses.asdict(options),
                "data": data_info or {},
                "devices": mesh.devices.size,
                "processes": mesh.devices.shape[0],
                "versions": versions(),
            },
        )
    height, width = images.shape[1:3]
    frames_dir = out / "frames"
    grid = jax.device_put(dt.pixel_grid(height, width))  # the mixture depends on position only

    def save_frame(graphdef, params, epoch):
        render = rd.render(graphdef, params, height=height, width=width, method="mode")
        frame = media.montage_frame(images, render, label=f"epoch {epoch}")
        media.save_png(frames_dir / f"epoch_{epoch:05d}.png", frame)

    def save_checkpoint(report_state, epoch, history):
        ckpt.save(
            checkpoint_dir,
            state=report_state,
            model_config=model_config,
            train_config=train_config,
            epoch=epoch,
            history=history,
            num_samples=num_samples,
        )

    if start_epoch >= train_config.epochs:
        log(
            f"{out} already has {start_epoch} epochs; writing its outputs again (raise --epochs to train more; "
            "a cosine schedule is then stretched over the new total)"
        )
    progress, task = _progress(train_config.epochs, start_epoch, options.progress and main)
    run_seconds = time.perf_counter()
    with signals.StopFlag() as stop, progress:

        def on_epoch(report: tr.EpochReport):
            # Read once: a Ctrl-C during this callback acts after the next epoch. With several
            # processes all stop together if any was asked to (a tiny all-gather per epoch).
            stop_now = bool(parallel.gather_from_processes(np.array([stop.requested]), mesh).any())
            params = parallel.local(
                report.state.params
            )  # one device's copy, for this process's own work
            record = {
                "epoch": report.epoch,
                "loss": round(report.loss, 6) if np.isfinite(report.loss) else None,
                "seconds": round(report.seconds, 4),
                "samples_per_second": round(report.samples_per_second, 1),
            }
            skipped = report.history_record.get("skipped_steps") if report.history_record else None
            if skipped:
                record["skipped_steps"] = skipped
            mixture = _grid_mixture(report.graphdef, params, grid)
            record.update(
                metrics.collapse_diagnostics(mixture, scale_floor=model_config.scale_floor)
            )
            history.append(record)
            progress.update(
                task,
                completed=report.epoch,
                status=f"loss {report.loss:.4f}  {report.samples_per_second / 1e3:.0f}k samples/s  "
                f"K_eff {record['effective_components']:.1f}  unused {record['unused_components']}  "
                f"at floor {100 * record['scales_at_floor']:.0f}%",
            )
            last = report.epoch == train_config.epochs or stop_now
            every = options.frame_every
            if main and (report.epoch == 1 or last or (every and report.epoch % every == 0)):
                save_frame(report.graphdef, params, report.epoch)
                if not options.progress:  # no bar (e.g. output to a file): a line per frame instead
                    log(
                        f"epoch {report.epoch}/{train_config.epochs}: loss {report.loss:.4f} nats/pixel, "
                        f"{report.samples_per_second / 1e3:.0f}k samples/s, effective components "
                        f"{record['effective_components']:.1f}, unused {record['unused_components']}, "
                        f"scales at floor {100 * record['scales_at_floor']:.0f}%"
                    )
            if last or (options.checkpoint_every and report.epoch % options.checkpoint_every == 0):
                save_checkpoint(report.state, report.epoch, history)
            return stop_now

        try:
            result = tr.fit(
                xs,
                ys,
                model_config=model_config,
                train_config=train_config,
                callbacks=[on_epoch, *callbacks],
                normalise_inputs=False,
                state=state,
                start_epoch=start_epoch,
                devices=mesh.devices.size,
            )
        except tr.NonFiniteError as error:
            kept = ckpt.latest_epoch(checkpoint_dir)
            where = (
                f"the checkpoint of epoch {kept} is kept: continue with --resume and one of those changes"
                if kept is not None
                else "no checkpoint was written yet: start again with one of those changes"
            )
            raise tr.NonFiniteError(f"{error}; {where}") from None
    interrupted = bool(history) and history[-1]["epoch"] < train_config.epochs
    if interrupted:
        log(
            f"interrupted: checkpoint saved at epoch {history[-1]['epoch'] if history else start_epoch}; "
            f"continue with --resume"
        )
    if not main:
        return None
    return finish(
        out,
        images,
        result.graphdef,
        parallel.local(result.state.params),
        model_config,
        history,
        options,
        seconds=time.perf_counter() - run_seconds,
        interrupted=interrupted,
        devices=mesh.devices.size,
    )


def _changed_rate(was: float, now: float) -> str:
    """Resuming with another learning rate is allowed (a lower one after a non-finite stop is
    the usual fix), but never silently."""
    return (
        f"--lr {now:g} replaces the {was:g} of the checkpoint: the run continues with the new "
        "rate, so it no longer equals an uninterrupted run"
    )


def _silent(message: str) -> None:
    """The log of every process but process 0."""


@functools.partial(jax.jit, static_argnums=0)
def _grid_mixture(graphdef, params, grid):
    """The model's mixture at every training position, batch `[H * W]`."""
    return mdl.apply(graphdef, params, grid)


def finish(
    out: Path,
    images: np.ndarray,
    graphdef,
    params,
    model_config: mdl.ModelConfig,
    history: list[dict],
    options: RunOptions,
    *,
    seconds: float,
    interrupted: bool = False,
    devices: int = 1,
) -> dict:
    """Write metrics.json, then the pictures (montage GIF, renders, loss curve); a picture that
    cannot be made is skipped with one line (see `mdn_jax.pictures`) and listed in metrics.json
    as `skipped_pictures`."""
    scores = metrics.image_scores(graphdef, params, images)
    steady = [h["samples_per_second"] for h in history[1:]] or [
        h["samples_per_second"] for h in history
    ]
    values = {
        **scores,
        "samples_per_second": round(statistics.median(steady), 1) if steady else None,
        "epochs": history[-1]["epoch"] if history else 0,
        "seconds": round(sum(h["seconds"] for h in history), 3),
        "wall_seconds_this_session": round(seconds, 3),
        "interrupted": interrupted,
        "device": device_name(),
        "devices": devices,
        "versions": versions(),
        "history": history,
    }
    write_json(out / "metrics.json", values)  # before any picture: a picture cannot cost it
    skipped = pictures.write_all(
        out, images, graphdef, params, model_config, history, samples=options.samples
    )
    if skipped:
        values["skipped_pictures"] = skipped
        write_json(out / "metrics.json", values)
    return values


def load_run(run_dir: str | Path):
    """The trained model of a run folder: `(graphdef, params, model_config, metadata)`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ckpt.CheckpointError(
            f"{run_dir}: no such run folder; pass the --out folder of a training run"
        )
    restored = runlock.restore_newest(run_dir / "checkpoint")  # it may be training right now
    return restored.graphdef, restored.state.params, restored.model_config, restored
