"""The training settings `mdn-jax train` and `demo` use on images when a flag is left out.

The default is the hash-grid encoding with the settings that suit it (measured with
benchmarks/photo_fidelity.py; README: Input encodings): a small 64-64 trunk, large batches, a
high rate with a cosine decay, spread initial means and instant-ngp's Adam beta2 and epsilon.
An identity or Fourier encoding keeps the reference settings, the library's own defaults
(`TrainConfig()`, `REFERENCE_TRUNK`). Those flags default to None in the parser, and
`resolve` fills in the set that the encoding asks for. Plain Python, like `mdn_jax.config`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mdn_jax import config as cfg

_TRAIN = cfg.TrainConfig()

HASHGRID = dict(
    hidden=(64, 64),
    batch_size=4096,
    lr=1e-2,
    schedule="cosine",
    init="spread",
    adam_b2=0.99,
    adam_eps=1e-15,
)
# At most this many epochs by default: on the five photos 60 hash-grid epochs took 0.61x the
# time of the reference's 100 and passed 30 dB on every photo; 100 epochs reach 35 dB but took
# 1.0 to 1.15x the reference's time on the loaded test machine (README: Input encodings).
HASHGRID_EPOCHS = 60
REFERENCE = dict(
    hidden=cfg.REFERENCE_TRUNK,
    batch_size=_TRAIN.batch_size,
    lr=_TRAIN.learning_rate,
    schedule=_TRAIN.schedule,
    init="random",
    adam_b2=_TRAIN.adam_b2,
    adam_eps=_TRAIN.adam_eps,
)


def resolve(args: argparse.Namespace, *, pixels: int | None = None) -> argparse.Namespace:
    """Fill in, in place, the training flags left at None and return `args`: `--encoding` is
    fourier when --fourier-features are given, else hashgrid; trunk, batch size, rate,
    schedule, init and Adam's beta2 and epsilon follow the encoding (HASHGRID or REFERENCE),
    and so do the epochs: the subcommand's (`args.reference_epochs`), at most HASHGRID_EPOCHS
    with the hash grid.

    `pixels`, the number of training pixels, caps the hash grid's default batch of 4096, so
    small images train with whole-image batches instead of failing the batch-size check."""
    if args.encoding is None:
        args.encoding = "fourier" if args.fourier_features else "hashgrid"
    defaults = dict(HASHGRID if args.encoding == "hashgrid" else REFERENCE)
    reference_epochs = getattr(args, "reference_epochs", None)  # the subcommand's default
    if reference_epochs is not None:
        grid = args.encoding == "hashgrid"
        defaults["epochs"] = hashgrid_epochs(reference_epochs) if grid else reference_epochs
    if pixels is not None and args.encoding == "hashgrid":
        defaults["batch_size"] = max(1, min(defaults["batch_size"], pixels))
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def hashgrid_epochs(reference_epochs: int) -> int:
    """The hash grid's default epochs where the reference's are `reference_epochs`."""
    return min(reference_epochs, HASHGRID_EPOCHS)


def stored_encoding(run_dir) -> str | None:
    """The encoding in a run folder's config.json, None without one: `--resume` without
    `--encoding` takes the defaults of the run's own encoding, so a run started before the
    hash grid became the default resumes as it was trained."""
    try:
        model = json.loads((Path(run_dir) / "config.json").read_text())["model"]
        # A config from before `encoding` existed: Fourier features or raw positions.
        encoding = model.get("encoding") or (
            "fourier" if model.get("fourier_features") else "identity"
        )
    except (OSError, KeyError, ValueError, TypeError, AttributeError):  # no run folder there
        return None
    return encoding if encoding in cfg.ENCODINGS else None


def training_pixels(images, holdout: float) -> int:
    """How many pixels of `images [N, H, W, C]` train, with a `holdout` share kept out."""
    from mdn_jax import holdout as hd  # numpy

    count = images[..., 0].size
    return count - (hd.split(count, fraction=holdout)[1].size if holdout else 0)


def both(name: str, show=str) -> str:
    """'default X with the hash grid, Y otherwise': help text of an encoding-dependent flag."""
    return f"default {show(HASHGRID[name])} with the hash grid, {show(REFERENCE[name])} otherwise"


def widths(values) -> str:
    return ",".join(map(str, values))
