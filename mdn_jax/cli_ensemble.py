"""`mdn-jax train/demo --ensemble M` and per-member comma lists: arguments into member configs.

Per-member flags: `--lr`, `--seed`, `--scale-floor`, `--dropout` (comma-separated values) and
`--hidden` (trunks separated by '/', e.g. `100,100/200,200`). A list's length sets M, or must equal
`--ensemble`; a single value applies to every member, except `--seed`, whose single value s
gives members the seeds s, s + 1, ..., so an ensemble differs by seed. Without `--ensemble` and
without lists, training is the single-model run it always was.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

# The per-member flags: argparse destination -> the flag as a user writes it.
PER_MEMBER = {
    "lr": "--lr",
    "seed": "--seed",
    "scale_floor": "--scale-floor",
    "dropout": "--dropout",
    "hidden": "--hidden",
}


def _values(args, name: str):
    """The flag's per-member tuple, or None when it holds one value."""
    value = getattr(args, name)
    if name == "hidden":  # a trunk is itself a tuple of ints; several trunks a tuple of tuples
        return value if value and isinstance(value[0], tuple) else None
    return value if isinstance(value, tuple) else None


def members(args) -> int | None:
    """M for an ensemble run, None for a single-model run; ValueError (one line) when the
    lists' lengths disagree with each other or with --ensemble."""
    lists = {PER_MEMBER[n]: v for n in PER_MEMBER if (v := _values(args, n)) is not None}
    count = getattr(args, "ensemble", None)
    for flag, values in lists.items():
        if count is None:
            count = len(values)
            first = flag
            continue
        if len(values) != count:
            against = f"--ensemble is {args.ensemble}" if args.ensemble else f"{first} has {count}"
            raise ValueError(
                f"{flag} has {len(values)} values but {against}; give one value per member "
                f"({count}) or a single value for all"
            )
    return count


def member_args(args, count: int) -> list[argparse.Namespace]:
    """One copy of `args` per member, each per-member flag holding that member's value."""
    result = []
    for m in range(count):
        member = copy.copy(args)
        for name in PER_MEMBER:
            values = _values(args, name)
            if values is not None:
                setattr(member, name, values[m])
            elif name == "seed":
                member.seed = args.seed + m
        result.append(member)
    return result


def train_and_report(images, args, data_info, count: int) -> int:
    """Train the ensemble into `args.out` and print its summary; the exit code."""
    from mdn_jax import cli_commands, ensemble_runs

    if getattr(args, "distributed", False) or getattr(args, "coordinator", None):
        raise ValueError("--ensemble runs in one process; drop --distributed (or --ensemble)")
    configs = [cli_commands._configs(member, images) for member in member_args(args, count)]
    values = ensemble_runs.train_ensemble_on_images(
        images,
        args.out,
        model_configs=[model for model, _, _ in configs],
        train_configs=[train for _, train, _ in configs],
        options=configs[0][2],
        resume=args.resume,
        data_info=data_info,
        devices=args.devices,
    )
    ensemble = values["ensemble"]
    nlls = ", ".join(f"{member['nll_nats']:.3f}" for member in values["members"])
    print(
        f"ensemble of {count}: NLL {ensemble['nll_nats']:.3f} nats/pixel, "
        f"{ensemble['bits_per_channel']:.3f} bits/channel; members' NLL {nlls}; "
        f"{values['samples_per_second'] / 1e3:.0f}k samples/s (all members) on "
        f"{values['devices']} device{'s' if values['devices'] > 1 else ''}"
    )
    print(
        f"wrote {Path(args.out)}/: scores of each member and the ensemble in metrics.json, one "
        "line per epoch in history.jsonl, reconstructions.png (the ensemble and each member), "
        "uncertainty.png, loss.png"
    )
    if values.get("interrupted"):
        from mdn_jax import signals

        return signals.exit_code()
    return cli_commands.EXIT_PICTURES if values.get("skipped_pictures") else 0
