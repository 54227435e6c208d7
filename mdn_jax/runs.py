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

Every file is written under a temporary name and renamed into place. Ctrl-C stops after the
current epoch, saves a checkpoint and writes the outputs; a second Ctrl-C aborts at once.

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
from mdn_jax import data as dt
from mdn_jax import media, parallel
from mdn_jax import model as mdl
from mdn_jax import run_callbacks as rc
from mdn_jax import train as tr
from mdn_jax.run_folder import finish, versions, write_json


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
    placement = parallel.Placement.build(devices, batch_size=train_config.batch_size)
    main = parallel.is_main_process()
    log = log if main else _silent
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a run folder; pass a folder path as --out")
    start_epoch, state, history = _resume_point(
        out, resume, placement, model_config, train_config, xs.shape[0], log
    )
    log(
        f"training on {len(images)} image(s) of {images.shape[1]}x{images.shape[2]} "
        f"({xs.shape[0]:,} pixels) on {placement.describe()}; {model_config.components} "
        f"{model_config.structure} components, {train_config.epochs} epochs"
        + (f", {model_config.dtype} trunk" if model_config.dtype != "float32" else "")
    )
    num_samples = xs.shape[0]
    if placement.processes > 1:  # this process trains on its own share of the pixels
        share = parallel.process_share(num_samples)
        xs, ys = xs[share], ys[share]
    if main:
        _prepare_folder(out, resume=resume)
        write_json(
            out / "config.json",
            {
                "model": model_config.to_dict(),
                "train": train_config.to_dict(),
                "run": dataclasses.asdict(options),
                "data": data_info or {},
                "devices": placement.devices,
                "processes": placement.processes,
                "versions": versions(),
            },
        )
    if start_epoch >= train_config.epochs:
        log(
            f"{out} already has {start_epoch} epochs; writing its outputs again (raise --epochs "
            "to train more; a cosine schedule is then stretched over the new total)"
        )
    progress, task = rc.progress_bar(train_config.epochs, start_epoch, options.progress and main)
    run_seconds = time.perf_counter()
    history = rc.RunHistory(history)
    with rc.StopFlag() as flag, progress:
        stop = rc.StopOnSignal(flag, placement)
        frames = rc.Frames(
            images,
            out / "frames",
            every=options.frame_every,
            epochs=train_config.epochs,
            stop=stop,
            log=None if options.progress else log,
        )
        run_callbacks = [
            stop,
            rc.Diagnostics(
                jax.device_put(dt.pixel_grid(*images.shape[1:3])), model_config.scale_floor
            ),
            rc.ProgressText(progress, task),
            history,
            *([frames] if main else []),
            rc.Checkpoints(
                out / "checkpoint",
                every=options.checkpoint_every,
                stop=stop,
                history=history,
                model_config=model_config,
                train_config=train_config,
                num_samples=num_samples,
            ),
        ]
        try:
            result = tr.fit_placed(
                placement,
                xs,
                ys,
                model_config=model_config,
                train_config=train_config,
                callbacks=[*run_callbacks, *callbacks],
                normalise_inputs=False,
                state=state,
                start_epoch=start_epoch,
            )
        except tr.NonFiniteError as error:
            raise tr.NonFiniteError(f"{error}; {_where_to_resume(out)}") from None
    history = history.records
    interrupted = bool(history) and history[-1]["epoch"] < train_config.epochs
    if interrupted:
        log(
            f"interrupted: checkpoint saved at epoch {history[-1]['epoch']}; continue with --resume"
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
        devices=placement.devices,
    )


def _resume_point(out, resume, placement, model_config, train_config, num_samples, log):
    """`(start_epoch, state or None, history)` of the run in `out`: a fresh start, or the state
    of its latest checkpoint when resuming with the same settings and images."""
    checkpoint_dir = out / "checkpoint"
    latest = ckpt.latest_epoch(checkpoint_dir)
    if not resume and latest is not None:
        raise ckpt.CheckpointError(
            f"{out} already holds a trained run (checkpoint at epoch {latest}); "
            "pass --resume to continue it or choose a new --out folder"
        )
    if not resume:
        return 0, None, []
    if latest is None:
        raise ckpt.CheckpointError(f"no checkpoint in {checkpoint_dir}; start without --resume")
    restored = ckpt.restore(checkpoint_dir, mesh=placement.mesh)
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
        "training pixels": num_samples,
    }
    changed = [f"{k} {was[k]!r} (now {now[k]!r})" for k in was if was[k] != now.get(k)]
    if changed:
        raise ckpt.CheckpointError(
            f"{out} was trained with other settings: {', '.join(changed)}; resume with the same "
            "images and flags or start a new --out folder"
        )
    log(f"resuming {out} from epoch {restored.epoch}")
    return restored.epoch, restored.state, list(restored.history)


def _prepare_folder(out: Path, *, resume: bool) -> None:
    """Create the run folder and clear what an earlier, killed or unfinished run left there."""
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # frames of an earlier run that never checkpointed must not join the montage
        for stale in (out / "frames").glob("epoch_*.png"):
            stale.unlink()
    # A run killed mid-write leaves temporaries (never a file under its final name); clear them.
    for folder in (out, out / "frames"):
        media.remove_temporaries(folder)
    ckpt.remove_unfinished(out / "checkpoint")


def _where_to_resume(out: Path) -> str:
    kept = ckpt.latest_epoch(out / "checkpoint")
    if kept is not None:
        return (
            f"the checkpoint of epoch {kept} is kept: continue with --resume and one of those "
            "changes"
        )
    return "no checkpoint was written yet: start again with one of those changes"


def _silent(message: str) -> None:
    """The log of every process but process 0."""


def load_run(run_dir: str | Path):
    """The trained model of a run folder: `(graphdef, params, model_config, metadata)`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ckpt.CheckpointError(
            f"{run_dir}: no such run folder; pass the --out folder of a training run"
        )
    restored = ckpt.restore(run_dir / "checkpoint")
    return restored.graphdef, restored.state.params, restored.model_config, restored
