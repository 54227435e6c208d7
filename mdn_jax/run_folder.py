"""A run folder's files: clearing what a killed run left, and what a finished run writes
(final renders, montage, loss curve, metrics).

See `mdn_jax.runs` for the folder's layout. Every file is written under a temporary name and
renamed into place (`mdn_jax.media.atomic_write`).
"""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from mdn_jax import checkpoint as ckpt
from mdn_jax import media, metrics
from mdn_jax import model as mdl
from mdn_jax import render as rd

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
) -> dict:
    """Write the final renders, the montage GIF, the loss curve and metrics.json."""
    _write_renders(out, images.shape[1:3], graphdef, params, model_config, options)
    media.save_png(
        out / "loss.png",
        media.line_chart(
            {
                "training NLL (nats/pixel)": [
                    np.nan if h["loss"] is None else h["loss"] for h in history
                ]
            },
            title="training loss",
        ),
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
        "history": history,
    }
    write_json(out / "metrics.json", values)
    return values


def _write_renders(out: Path, size, graphdef, params, model_config, options) -> None:
    """montage.gif from the frames, and the mode, component, sample and uncertainty renders."""
    height, width = size
    frames = sorted((out / "frames").glob("epoch_*.png"))
    if frames:
        import imageio.v3 as iio

        media.save_gif(out / "montage.gif", [iio.imread(f)[..., :3] / 255.0 for f in frames])
    render = functools.partial(rd.render, graphdef, params, height=height, width=width)
    media.save_png(out / "final_mode.png", render(method="mode"))
    component_renders = [
        render(method="component", component=k) for k in range(model_config.components)
    ]
    media.save_png(out / "components.png", media.grid(component_renders))
    samples = render(method="sample", key=jax.random.key(0), num_samples=options.samples)
    media.save_png(out / "samples.png", media.grid(list(samples)))
    media.save_png(out / "uncertainty.png", render(method="uncertainty"))
