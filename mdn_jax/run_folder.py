"""A run folder's files: clearing what a killed run left, and what a finished run writes
(montage, final mode render, the labelled pictures of `mdn_jax.run_pictures`, metrics, and
with a held-out share its calibration).

Layout of a run folder:

    config.json       model, training and data settings, versions
    metrics.json      scores (nll_nats, component_psnr, coverage_psnr, ...) and per-epoch history
                      (with --holdout: "calibration" on the held-out pixels)
    history.jsonl     one JSON line per finished epoch, written as training runs
    checkpoint/       Orbax checkpoints (params, optimiser state, epoch), newest kept
    frames/           one PNG per montage frame (training images over their reconstructions)
    montage.gif       those frames as an animation
    reconstructions.png  each training image beside its reconstruction, with its PSNR
    final_mode.png    the mode render at training resolution
    components.png    every component's mean, heaviest first, labelled with index and weight
    samples.png       independent and coherent samples (temperature 1)
    uncertainty.png   predictive standard deviation on a fixed scale, with a colour bar
    loss.png          the training curve (and the held-out one with --holdout)
    calibration.png   with --holdout: PIT histogram and coverage on the held-out pixels

Every file is written under a temporary name and renamed into place
(`mdn_jax.media.atomic_write`).
"""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import calibration, media, metrics
from mdn_jax import checkpoint as ckpt
from mdn_jax import model as mdl
from mdn_jax import render as rd
from mdn_jax import run_pictures as rp
from mdn_jax import train as tr

if TYPE_CHECKING:
    from mdn_jax.runs import RunOptions


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


def prepare_folder(out: Path, *, resume: bool) -> None:
    """Create the run folder and clear what an earlier, killed or unfinished run left there."""
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # frames of an earlier run that never checkpointed must not join the montage
        for stale in (out / "frames").glob("epoch_*.png"):
            stale.unlink()
    # A run killed mid-write leaves temporaries (never a file under its final name); clear them.
    for folder in (out, out / "frames"):
        media.remove_temporaries(folder)
    ckpt.remove_unfinished(out / "checkpoint")


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
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Write the montage, final_mode.png, the labelled pictures (reconstructions, components,
    samples, uncertainty, loss), metrics.json and, with `held_out = (xs, ys)`, calibration."""
    _write_renders(out, images.shape[1:3], graphdef, params)
    rp.write_run_pictures(
        out, graphdef, params, images, history, key=jax.random.key(0), num_samples=options.samples
    )
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
    }
    if held_out is not None:
        values.update(_held_out_scores(out, graphdef, params, *held_out))
    values["history"] = history
    write_json(out / "metrics.json", values)
    return values


def _held_out_scores(out: Path, graphdef, params, xs, ys) -> dict:
    """`held_out_nll` and `calibration` (`mdn_jax.calibration_metrics`) of the held-out pixels
    `xs [M, 2]`, `ys [M, 3]`; writes calibration.png."""
    chunk = 65536
    parts = [
        _mixture(graphdef, params, xs[start : start + chunk]) for start in range(0, len(xs), chunk)
    ]
    mixture = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *parts)
    scores = calibration.calibration_metrics(mixture, jnp.asarray(ys, jnp.float32))
    media.save_png(out / "calibration.png", media.calibration_chart(scores))
    nll = tr.evaluate_nll(graphdef, params, xs, ys)
    return {rp.HELD_OUT_KEY: round(nll, 6) if np.isfinite(nll) else None, "calibration": scores}


@functools.partial(jax.jit, static_argnums=0)
def _mixture(graphdef, params, xs):
    """The model's mixture at positions `xs [C, 2]`, batch `[C]`."""
    return mdl.apply(graphdef, params, xs)


def _write_renders(out: Path, size, graphdef, params) -> None:
    """montage.gif from the frames, and the mode render (the labelled pictures are
    `run_pictures`')."""
    height, width = size
    frames = sorted((out / "frames").glob("epoch_*.png"))
    if frames:
        import imageio.v3 as iio

        media.save_gif(out / "montage.gif", [iio.imread(f)[..., :3] / 255.0 for f in frames])
    render = functools.partial(rd.render, graphdef, params, height=height, width=width)
    media.save_png(out / "final_mode.png", render(method="mode"))
