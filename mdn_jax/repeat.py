"""`mdn-jax train --config RUN/config.json`: repeat a run's settings, explicit flags winning.

A run folder's config.json is turned back into the command-line flags that produce it, and
those flags are placed before the user's own: argparse keeps the last value it sees for a flag,
so every flag given on the command line overrides the file's. Without IMAGE_OR_FOLDER
arguments the run's own image files are used. What belongs to the machine rather than to the
run (devices, processes, the progress bar) is not repeated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# config.json section and key -> the train flag that sets it.
_FLAGS = {
    ("model", "components"): "--components",
    ("model", "structure"): "--structure",
    ("model", "scale_floor"): "--scale-floor",
    ("model", "fourier_features"): "--fourier-features",
    ("model", "fourier_scale"): "--fourier-scale",
    ("model", "encoding"): "--encoding",
    ("model", "hashgrid_levels"): "--hashgrid-levels",
    ("model", "hashgrid_features"): "--hashgrid-features",
    ("model", "hashgrid_log2_table"): "--hashgrid-log2-table",
    ("model", "hashgrid_min_res"): "--hashgrid-min-res",
    ("model", "hashgrid_max_res"): "--hashgrid-max-res",
    ("model", "dtype"): "--dtype",
    ("model", "dropout"): "--dropout",
    ("train", "epochs"): "--epochs",
    ("train", "batch_size"): "--batch-size",
    ("train", "learning_rate"): "--lr",
    ("train", "schedule"): "--schedule",
    ("train", "clip_norm"): "--clip-norm",
    ("train", "seed"): "--seed",
    ("train", "loss"): "--loss",
    ("train", "on_nonfinite"): "--on-nonfinite",
    ("train", "adam_b2"): "--adam-b2",
    ("train", "adam_eps"): "--adam-eps",
    ("run", "frame_every"): "--frame-every",
    ("run", "checkpoint_every"): "--checkpoint-every",
    ("run", "holdout"): "--holdout",
}


def read_config(path: str | Path) -> dict:
    """The parsed config.json of a run folder (ValueError, one line, if it is not one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(
            f"--config {path}: {error.strerror or error}; pass a run folder's config.json"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"--config {path} is not JSON; pass a run folder's config.json") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"--config {path} has no model settings; pass a run folder's config.json")
    return config


def config_flags(config: dict) -> list[str]:
    """The train flags that repeat `config`'s settings, e.g. ['--components', '10', ...]."""
    flags = []
    for (section, key), flag in _FLAGS.items():
        value = (config.get(section) or {}).get(key)
        if value is not None and not isinstance(value, (dict, list)):
            flags += [flag, str(value)]
    model = config["model"]
    if model.get("hidden"):
        flags += ["--hidden", ",".join(str(width) for width in model["hidden"])]
    # Spread means are recomputed from the same images; both are said, since the default
    # depends on the encoding (`mdn_jax.image_defaults`).
    flags += ["--init", "spread" if model.get("mean_init") is not None else "random"]
    flags += _member_flags(config.get("members"))
    data = config.get("data") or {}
    if isinstance(data.get("height"), int) and isinstance(data.get("width"), int):
        flags += ["--size", f"{data['height']}x{data['width']}"]
    return flags


def _member_flags(members) -> list[str]:
    """An ensemble run's --ensemble and per-member lists (`mdn_jax.cli_ensemble`); [] for none."""
    if not isinstance(members, list) or not members:
        return []
    try:
        lists = {
            "--lr": [m["train"]["learning_rate"] for m in members],
            "--seed": [m["train"]["seed"] for m in members],
            "--scale-floor": [m["model"]["scale_floor"] for m in members],
            "--dropout": [m["model"].get("dropout", 0.0) for m in members],
        }
        trunks = "/".join(",".join(map(str, m["model"]["hidden"])) for m in members)
    except (KeyError, TypeError):
        raise ValueError(
            "--config has unreadable members; pass an ensemble run's config.json"
        ) from None
    flags = ["--ensemble", str(len(members)), "--hidden", trunks]
    for flag, values in lists.items():
        flags += [flag, ",".join(map(str, values))]
    return flags


def config_inputs(config: dict, path: str | Path) -> list[str]:
    """The image files the run trained on (ValueError, one line, for a demo run or none)."""
    sources = (config.get("data") or {}).get("source")
    if not isinstance(sources, list) or not sources:
        raise ValueError(
            f"--config {path} names no image files (a demo run?); give IMAGE_OR_FOLDER "
            "arguments, or repeat a demo with mdn-jax demo"
        )
    return [str(source) for source in sources]


def with_config(
    parser: argparse.ArgumentParser, argv: list[str], args: argparse.Namespace
) -> argparse.Namespace:
    """Parse `argv` (starting with 'train') again with `args.config`'s flags placed first."""
    config = read_config(args.config)
    position = argv.index("train") + 1
    repeated = parser.parse_args(argv[:position] + config_flags(config) + argv[position:])
    if not repeated.inputs:
        repeated.inputs = config_inputs(config, args.config)
    return repeated
