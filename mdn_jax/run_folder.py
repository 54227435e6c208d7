"""A run folder's files: clearing what a killed run left, and what a finished run writes
(metrics, then the final renders, montage and loss curve).

See `mdn_jax.runs` for the folder's layout. Every file is written under a temporary name and
renamed into place (`mdn_jax.media.atomic_write`).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from mdn_jax import checkpoint as ckpt
from mdn_jax import media, metrics, safe_outputs
from mdn_jax import model as mdl

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
    """Write metrics.json, then the pictures (montage GIF, renders, loss curve); a picture that
    cannot be made is skipped with one line (see `mdn_jax.safe_outputs`) and listed in
    metrics.json as `skipped_pictures`."""
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
    skipped = safe_outputs.write_all(
        out, images, graphdef, params, model_config, history, samples=options.samples
    )
    if skipped:
        values["skipped_pictures"] = skipped
        write_json(out / "metrics.json", values)
    return values
