"""`mdn-jax reproduce`: the reference experiments and what a careful MDN adds, in one report.

Every experiment is an ordinary run folder, `DIR/runs/<name>/` (see `mdn_jax.runs`), trained on
the first 1, 2 or all of the images. `DIR/report.md` gathers their scores in one table, with each
experiment's mode render and a small montage GIF (`DIR/report_files/`), a paragraph per
experiment written from its numbers, and the comparisons the reference example is about, each
stated with the figures behind it and whether this run confirms it.

Running the same command again continues: finished experiments are read back, an interrupted one
resumes from its last checkpoint, so nothing is lost on a crash or Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mdn_jax import checkpoint as ckpt
from mdn_jax import media, runs
from mdn_jax import model as mdl
from mdn_jax import reproduce_report as report_text
from mdn_jax import train as tr
from mdn_jax.reproduce_experiments import Experiment, by_name, experiments, model_config, names
from mdn_jax.reproduce_experiments import subset as _subset

DEFAULT_EPOCHS = 25
FULL_EPOCHS = 300  # the reference's
REPORT_FRAMES = 12  # frames in each report GIF


def _finished(run_dir: Path, epochs: int, config: mdl.ModelConfig, loss: str) -> dict | None:
    """The metrics of a finished run of exactly this experiment in run_dir, else None."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    same = (
        saved.get("model") == json.loads(json.dumps(config.to_dict()))
        and saved.get("train", {}).get("loss") == loss
        and saved.get("train", {}).get("epochs") == epochs
    )
    # metrics.json is written before the pictures: a run stopped between them is not finished
    pictured = (run_dir / "final_mode.png").is_file()
    if same and pictured and metrics.get("epochs") == epochs and not metrics.get("interrupted"):
        return metrics
    return None


def run(
    images: np.ndarray,
    out: str | Path,
    *,
    epochs: int = DEFAULT_EPOCHS,
    only: Sequence[str] | None = None,
    source: str = "built-in demo images",
    command: str = "mdn-jax reproduce",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the experiments on `images [N, H, W, 3]` (N >= 2) into `out`; returns the report path.

    Stops early (raising KeyboardInterrupt) when a run is interrupted with Ctrl-C; the report is
    then not written, and running again continues where it stopped.
    """
    images = np.asarray(images, np.float32)
    out = Path(out)
    train_config = tr.TrainConfig(epochs=epochs, batch_size=200, learning_rate=1e-3, seed=0)
    chosen = _chosen(images, out, only, train_config)
    options = runs.RunOptions(
        frame_every=max(1, epochs // REPORT_FRAMES),
        checkpoint_every=max(5, epochs // 5),
        samples=4,
        progress=progress,
    )
    results: dict[str, dict] = {}
    started, reused = time.perf_counter(), 0
    for index, experiment in enumerate(chosen, 1):
        log(f"[{index}/{len(chosen)}] {experiment.name}: {experiment.title}")
        metrics, was_finished = _run_experiment(
            experiment, images, out, train_config, options, source=source, log=log
        )
        reused += was_finished
        results[experiment.name] = metrics
        log("  " + report_text.summary_line(experiment, metrics))
    files = out / "report_files"
    for experiment in chosen:
        if not experiment.members:  # a stacked run has no pictures of its own
            _report_files(out / "runs" / experiment.name, files, experiment.name)
    minutes = (time.perf_counter() - started) / 60
    timing = f"This invocation took {minutes:.1f} minutes of wall-clock time, reports included" + (
        f"; {reused} of the {len(chosen)} experiments were read back from an earlier invocation."
        if reused
        else f" ({len(chosen)} experiments)."
    )
    text = report_text.report(
        chosen, results, images=images, epochs=epochs, source=source, command=command, timing=timing
    )
    path = out / "report.md"
    media.atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
    log(f"wrote {path}")
    return path


def _chosen(images, out: Path, only, train_config: tr.TrainConfig) -> list[Experiment]:
    """The experiments `only` names (None: all), after checking every setting, so a bad one
    fails before anything trains."""
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(
            f"reproduce needs at least two images (the experiments compare one, two and all), "
            f"got {images.shape[0] if images.ndim == 4 else 0}; pass two or more images"
        )
    chosen = [e for e in experiments() if only is None or e.name in only]
    wanted = {m for e in chosen for m in e.members}  # a stacked experiment needs its members
    chosen = [e for e in experiments() if e in chosen or e.name in wanted]
    unknown = sorted(set(only or ()) - set(names()))
    if unknown:
        raise ValueError(
            f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(names())}"
        )
    if not chosen:
        raise ValueError(f"--only names no experiment; choose from {', '.join(names())}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; pass a folder path as --out")
    batch_size = train_config.batch_size
    for experiment in chosen:
        pixels = _subset(experiment, images)[..., 0].size
        if pixels < batch_size:
            per_image = batch_size // max(1, experiment.images or len(images)) + 1
            raise ValueError(
                f"{experiment.name} would train on {pixels} pixels, fewer than the batch size "
                f"{batch_size}; use a larger --size (at least {per_image} pixels per image)"
            )
    return chosen


def _run_experiment(experiment, images, out, train_config, options, *, source, log):
    """`(metrics, True)` of a finished run of `experiment` in its folder, else trains it (or
    resumes it) and returns `(metrics, False)`; KeyboardInterrupt when the run was stopped."""
    if experiment.members:
        return _run_stacked(experiment, images, out, train_config, options, source=source, log=log)
    subset = _subset(experiment, images)
    config = model_config(experiment, subset)
    run_dir = out / "runs" / experiment.name
    metrics = _finished(run_dir, train_config.epochs, config, experiment.loss)
    if metrics is not None:
        log(f"  already finished in {run_dir}; reusing it")
        return metrics, True
    metrics = runs.train_on_images(
        subset,
        run_dir,
        model_config=config,
        train_config=_training(experiment, train_config, pixels=subset[..., 0].size),
        options=options,
        resume=ckpt.latest_epoch(run_dir / "checkpoint") is not None,
        log=lambda line: log("  " + line),
        data_info=_data_info(subset, source),
    )
    _stop_if_interrupted(experiment, metrics)
    return metrics, False


def _run_stacked(experiment, images, out, train_config, options, *, source, log):
    """`(metrics, reused)` of the ensemble run folder that trains `experiment.members`' models
    in one stacked call (each with its own run's seed and settings), as `_run_experiment`."""
    from mdn_jax import ensemble_runs

    members = [by_name(name) for name in experiment.members]
    subset = _subset(members[0], images)
    configs = [model_config(member, subset) for member in members]
    pixels = subset[..., 0].size
    train_configs = [_training(m, train_config, pixels=pixels) for m in members]
    run_dir = out / "runs" / experiment.name
    metrics = _finished_stacked(run_dir, train_config.epochs, configs, train_configs)
    if metrics is not None:
        log(f"  already finished in {run_dir}; reusing it")
        return metrics, True
    metrics = ensemble_runs.train_ensemble_on_images(
        subset,
        run_dir,
        model_configs=configs,
        train_configs=train_configs,
        options=options,
        resume=ckpt.latest_epoch(run_dir / "checkpoint") is not None,
        log=lambda line: log("  " + line),
        data_info=_data_info(subset, source),
    )
    _stop_if_interrupted(experiment, metrics)
    return metrics, False


def _data_info(subset, source) -> dict:
    """The run folder's `data` record for the images `subset [n, H, W, C]`."""
    height, width = (int(size) for size in subset.shape[1:3])
    return {"source": source, "count": len(subset), "height": height, "width": width}


def _stop_if_interrupted(experiment, metrics: dict) -> None:
    if metrics.get("interrupted"):
        raise KeyboardInterrupt(
            f"{experiment.name} interrupted; run the same command again to continue"
        )


def _finished_stacked(run_dir: Path, epochs: int, configs, train_configs) -> dict | None:
    """The metrics of a finished stacked run of exactly these members in run_dir, else None."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    wanted = [
        {"model": m.to_dict(), "train": t.to_dict()}
        for m, t in zip(configs, train_configs, strict=True)
    ]
    same = saved.get("members") == json.loads(json.dumps(wanted))
    if same and metrics.get("epochs") == epochs and not metrics.get("interrupted"):
        return metrics
    return None


def _training(experiment: Experiment, train_config: tr.TrainConfig, *, pixels: int):
    """The experiment's training settings: the report's, its loss and its own overrides."""
    overrides = dict(experiment.train or {})
    if "batch_size" in overrides:
        overrides["batch_size"] = min(overrides["batch_size"], pixels)
    return dataclasses.replace(train_config, loss=experiment.loss, **overrides)


def _report_files(run_dir: Path, files: Path, name: str) -> None:
    """The mode render and a smaller montage GIF (at most REPORT_FRAMES frames, half size)."""
    import imageio.v3 as iio

    mode = iio.imread(run_dir / "final_mode.png")
    media.save_png(files / f"{name}_mode.png", mode)
    frames = sorted((run_dir / "frames").glob("epoch_*.png"))
    if len(frames) > REPORT_FRAMES:  # keep the first and last, evenly spaced between
        frames = [
            frames[i] for i in np.linspace(0, len(frames) - 1, REPORT_FRAMES).round().astype(int)
        ]
    small = [_half_size(iio.imread(f)) for f in frames]
    media.save_gif(files / f"{name}_montage.gif", small, seconds_per_frame=0.4)


def _half_size(image: np.ndarray) -> np.ndarray:
    """Half the size (rounded up, as [::2, ::2] gave), resampled rather than every second pixel."""
    height, width = image.shape[:2]
    return media.shrink(image[..., :3], (-(-height // 2), -(-width // 2)))
