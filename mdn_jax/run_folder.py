"""A run folder's files: clearing what a killed run left, and what a finished run writes
(metrics.json, with a held-out share its calibration, then the pictures: montage, final mode
render and the labelled pictures of `mdn_jax.run_pictures`, through `mdn_jax.safe_outputs`).

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

from mdn_jax import calibration, media, metrics, safe_outputs
from mdn_jax import checkpoint as ckpt
from mdn_jax import model as mdl
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
    """Write metrics.json (with `held_out = (xs, ys)`: `held_out_nll` and `calibration` on
    those pixels), then the pictures (montage GIF, renders, labelled pictures, loss curve,
    calibration.png); a picture that cannot be made is skipped with one line (see
    `mdn_jax.safe_outputs`) and listed in metrics.json as `skipped_pictures`."""
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
        values.update(_held_out_scores(graphdef, params, *held_out))
    values["history"] = history
    write_json(out / "metrics.json", values)  # before any picture: a picture cannot cost it
    skipped = safe_outputs.write_all(
        out,
        images,
        graphdef,
        params,
        history,
        samples=options.samples,
        calibration=values.get("calibration"),
    )
    if skipped:
        values["skipped_pictures"] = skipped
        write_json(out / "metrics.json", values)
    return values


def _held_out_scores(graphdef, params, xs, ys) -> dict:
    """`held_out_nll` and `calibration` (`mdn_jax.calibration_metrics`) of the held-out pixels
    `xs [M, 2]`, `ys [M, 3]`."""
    chunk = 65536
    parts = [
        _mixture(graphdef, params, xs[start : start + chunk]) for start in range(0, len(xs), chunk)
    ]
    mixture = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *parts)
    scores = calibration.calibration_metrics(mixture, jnp.asarray(ys, jnp.float32))
    nll = tr.evaluate_nll(graphdef, params, xs, ys)
    return {rp.HELD_OUT_KEY: round(nll, 6) if np.isfinite(nll) else None, "calibration": scores}


@functools.partial(jax.jit, static_argnums=0)
def _mixture(graphdef, params, xs):
    """The model's mixture at positions `xs [C, 2]`, batch `[C]`."""
    return mdl.apply(graphdef, params, xs)
