"""The flags the `mdn-jax` command's training subcommands share, in their --help order.

Choices and defaults come from `mdn_jax.config`, so the flags cannot drift from the library; the
argument types live in `mdn_jax.cli_types` and are re-exported here for the old import path.
"""

from __future__ import annotations

import argparse

from mdn_jax import config as cfg
from mdn_jax import image_defaults
from mdn_jax.cli_types import (  # noqa: F401  (re-exported: the old home of the types)
    _adam_b2,
    hidden,
    listed,
    non_negative_float,
    non_negative_int,
    number,
    positive_float,
    positive_int,
    rate,
    short,
    size,
    trunks,
)
from mdn_jax.image_defaults import both as _both

MODEL = cfg.ModelConfig()  # the library's defaults, which the flags' defaults are
TRAIN = cfg.TrainConfig()


def add_training_flags(parser: argparse.ArgumentParser, *, epochs: int, frame_every: int) -> None:
    """The flags of every training subcommand (demo, train), in their --help order."""
    _add_model_shape_flags(parser)
    _add_optimiser_flags(parser, epochs=epochs)
    _add_model_detail_flags(parser)
    _add_placement_flags(parser)
    _add_run_folder_flags(parser, frame_every=frame_every)


def _add_model_shape_flags(parser: argparse.ArgumentParser) -> None:
    """The mixture and the trunk: K, structure, widths."""
    parser.add_argument(
        "--components",
        type=positive_int,
        default=MODEL.components,
        help=f"mixture components K (default {MODEL.components})",
    )
    parser.add_argument(
        "--structure",
        choices=cfg.STRUCTURES,
        default=MODEL.structure,
        help="joint: shared weights, diagonal (default); per_dim: a mixture per channel; "
        "full: full covariance",
    )
    parser.add_argument(
        "--hidden",
        type=trunks,
        default=None,
        help=f"trunk widths ({_both('hidden', image_defaults.widths)}); several trunks "
        "separated by / train an ensemble, one trunk per member (same depth)",
    )
    parser.add_argument(
        "--ensemble",
        type=positive_int,
        default=None,
        metavar="M",
        help="train M models side by side in one compiled call (seeds --seed, --seed + 1, ...); "
        "--lr, --seed, --scale-floor and --hidden then take one value per member "
        "(comma-separated; --hidden separated by /)",
    )


def _add_optimiser_flags(parser: argparse.ArgumentParser, *, epochs: int) -> None:
    """Optimisation: epochs, batch, learning rate and schedule, loss, non-finite policy,
    clipping."""
    grid = image_defaults.hashgrid_epochs(epochs)
    both = f"{epochs} with identity or Fourier, {grid} with the hash grid"
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"epochs (default {both if grid != epochs else epochs})",
    )
    parser.set_defaults(reference_epochs=epochs)  # what --epochs left out means without a grid
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"batch size ({_both('batch_size')})",
    )
    parser.add_argument(
        "--lr",
        type=listed(positive_float),
        default=None,
        help=f"Adam learning rate ({_both('lr', short)}); one per member with --ensemble",
    )
    parser.add_argument(
        "--schedule",
        choices=cfg.SCHEDULES,
        default=None,
        help=f"learning-rate schedule ({_both('schedule')})",
    )
    parser.add_argument(
        "--adam-b2",
        type=_adam_b2,
        default=None,
        help=f"Adam's second-moment decay beta2 ({_both('adam_b2')})",
    )
    parser.add_argument(
        "--adam-eps",
        type=positive_float,
        default=None,
        help=f"Adam's epsilon ({_both('adam_eps', short)})",
    )
    parser.add_argument(
        "--loss",
        choices=cfg.LOSSES,
        default=TRAIN.loss,
        help="nll: continuous likelihood (default); discretised: mass of each colour's 8-bit bin",
    )
    parser.add_argument(
        "--on-nonfinite",
        choices=cfg.ON_NONFINITE,
        default=TRAIN.on_nonfinite,
        help="a NaN/inf loss or gradient is never applied; stop (default) ends training with "
        "a message, skip carries on and counts skipped steps",
    )
    parser.add_argument(
        "--clip-norm",
        type=positive_float,
        default=TRAIN.clip_norm,
        help="clip gradients to this global norm",
    )


def _add_model_detail_flags(parser: argparse.ArgumentParser) -> None:
    """The rest of the model: scale floor, Fourier encoding, initialisation, seed, dtype."""
    parser.add_argument(
        "--scale-floor",
        type=listed(positive_float),
        default=cfg.IMAGE_SCALE_FLOOR,
        help=f"smallest standard deviation (default {cfg.IMAGE_SCALE_FLOOR:g}, ~2.5/255)",
    )
    parser.add_argument(
        "--fourier-features",
        type=non_negative_int,
        default=MODEL.fourier_features,
        help="random Fourier features of the position (0: raw positions, the default)",
    )
    parser.add_argument(
        "--fourier-scale",
        type=positive_float,
        default=MODEL.fourier_scale,
        help=f"standard deviation of the Fourier frequencies (default {MODEL.fourier_scale:g})",
    )
    _add_encoding_flags(parser)
    parser.add_argument(
        "--init",
        choices=("random", "spread"),
        default=None,
        help="random: the usual initialisation; spread: component means start on colours "
        f"spread over the images and the head starts small ({_both('init')})",
    )
    parser.add_argument(
        "--seed",
        type=listed(non_negative_int),
        default=TRAIN.seed,
        help=f"random seed (default {TRAIN.seed})",
    )
    parser.add_argument(
        "--dropout",
        type=listed(rate),
        default=MODEL.dropout,
        help="dropout rate on the trunk's hidden layers, in training only (default "
        f"{MODEL.dropout:g}: none); one per member with --ensemble",
    )
    parser.add_argument(
        "--dtype",
        choices=cfg.DTYPES,
        default=MODEL.dtype,
        help="compute dtype of the trunk's matrix products; bfloat16 keeps params, optimiser "
        f"state and the likelihood in float32 (default {MODEL.dtype})",
    )


def _add_encoding_flags(parser: argparse.ArgumentParser) -> None:
    """Which input encoding (identity, fourier, hashgrid) and the hash grid's size."""
    parser.add_argument(
        "--encoding",
        choices=cfg.ENCODINGS,
        default=None,
        help="input encoding of the position: hashgrid (a trainable multiresolution hash grid, "
        "the default), fourier (needs --fourier-features; the default when they are given) or "
        "identity (raw positions, the reference)",
    )
    for flag, field, what in (
        ("--hashgrid-levels", "hashgrid_levels", "levels (resolutions)"),
        ("--hashgrid-features", "hashgrid_features", "features per level"),
        ("--hashgrid-log2-table", "hashgrid_log2_table", "log2 of the table's rows per level"),
        ("--hashgrid-min-res", "hashgrid_min_res", "cells per axis of the coarsest level"),
        ("--hashgrid-max-res", "hashgrid_max_res", "cells per axis of the finest level"),
    ):
        default = getattr(MODEL, field)
        parser.add_argument(
            flag, type=positive_int, default=default, help=f"hash grid {what} (default {default})"
        )


def _add_placement_flags(parser: argparse.ArgumentParser) -> None:
    """Where training runs: devices, and the processes of a multi-process run."""
    parser.add_argument(
        "--devices",
        type=positive_int,
        default=None,
        help="data parallel over this many devices (default: all; the batch size must be a "
        "multiple); with several processes, the total over all of them",
    )
    cluster = parser.add_argument_group("several processes (see README: Several devices and hosts)")
    cluster.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run: jax.distributed.initialize() from the cluster's "
        "environment (SLURM, Open MPI, TPU pods), or from the three flags below",
    )
    cluster.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=None,
        help="address of process 0 (implies --distributed)",
    )
    cluster.add_argument(
        "--num-processes", type=positive_int, default=None, help="processes in all"
    )
    cluster.add_argument(
        "--process-id", type=non_negative_int, default=None, help="this process's index, 0-based"
    )


def _add_run_folder_flags(parser: argparse.ArgumentParser, *, frame_every: int) -> None:
    """The run folder: frames, checkpoints, resume, progress."""
    parser.add_argument(
        "--frame-every",
        type=non_negative_int,
        default=frame_every,
        help=f"epochs between montage frames (default {frame_every})",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=25,
        help="epochs between checkpoints (default 25; one is always written at the end)",
    )
    parser.add_argument(
        "--holdout",
        type=number(float, allow_zero=True),
        default=None,
        metavar="FRACTION",
        help="share of the pixels kept out of training (seeded by --seed), scored each epoch as "
        "held_out_nll and calibrated at the end (default 0: none; --resume keeps the run's own)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --out"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
