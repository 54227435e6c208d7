"""Many models at once: aggregate training samples/s of M stacked models against M sequential fits.

The reference workload (81,920 (row, column) -> RGB pairs from the five built-in 128x128 demo
images, joint K=10, the reference trunk, Adam at 1e-3), M members differing only by seed:

  stacked     `mdn_jax.stacked.fit_stacked` with M members: one compiled epoch program for all
              of them (on CPU called once per group of members, each group one scan:
              `mdn_jax.stacked_in_turn`; on an accelerator one call, members vmapped:
              `stacked.members_in_turn`)
  sequential  `mdn_jax.train.fit` called M times, one member after another (what a user
              without stacking writes)

Both go through the public fit functions, so the figures include each epoch's host work
(shuffle, loss read-back; `fit_stacked` draws the next epoch's shuffles while an epoch runs).
Each fit runs `--epochs` epochs; the first compiles and is reported on its own
(`compile_seconds`: the first epoch's time minus a timed one, summed over the fits), the rest
are timed. Aggregate samples/s = M x samples per epoch / seconds per epoch (for
sequential, the sum of the M fits' epoch times). Contenders alternate (stacked, sequential,
stacked, ...) so drift hits both alike; figures are medians over the timed epochs of all
repeats. Prints JSON lines, then a markdown table with the ratio stacked / sequential (> 1:
stacking is faster) and the lowest and highest ratio of a single repeat (at M = 1 both run the
same compiled programs, so that row's ratio is a tie and its spread is the measurement's noise).

    python benchmarks/stacked_throughput.py            # M 1, 4, 8, 32 at batch 200 and 4096
    python benchmarks/stacked_throughput.py --quick    # smoke test: small data, M 1 and 4
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from mdn_jax import data, model, stacked, train  # noqa: E402
from mdn_jax.config import REFERENCE_TRUNK  # noqa: E402


def _configs(count: int, batch_size: int, epochs: int):
    model_config = model.ModelConfig(
        hidden=REFERENCE_TRUNK,
        components=10,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
        scale_floor=0.01,
    )
    trains = [
        train.TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=1e-3, seed=seed)
        for seed in range(count)
    ]
    return model_config, trains


def run_stacked(xs, ys, count: int, batch_size: int, epochs: int) -> tuple[list[float], float]:
    """`(seconds of each timed epoch, compile seconds)` of one stacked fit of `count` members."""
    model_config, trains = _configs(count, batch_size, epochs)
    fit = stacked.fit_stacked(xs, ys, model_configs=[model_config] * count, train_configs=trains)
    seconds = [record["seconds"] for record in fit.history]
    return seconds[1:], seconds[0] - common.median(seconds[1:])


def run_sequential(xs, ys, count: int, batch_size: int, epochs: int) -> tuple[list[float], float]:
    """`(seconds of each timed epoch of all members together, compile seconds)` of `count`
    fits one after another: epoch e's time is the sum of every member's epoch e."""
    model_config, trains = _configs(count, batch_size, epochs)
    per_member = []
    for train_config in trains:
        result = train.fit(xs, ys, model_config=model_config, train_config=train_config)
        per_member.append([record["seconds"] for record in result.history])
    totals = np.sum(per_member, axis=0)  # [epochs]
    compile_seconds = sum(s[0] - common.median(s[1:]) for s in per_member)
    return list(totals[1:]), float(compile_seconds)


def measure(xs, ys, *, count: int, batch_size: int, epochs: int, repeats: int) -> dict:
    """Both contenders, alternating, `repeats` times; their medians and the ratio."""
    runners = {"stacked": run_stacked, "sequential": run_sequential}
    timed = {name: [] for name in runners}
    compiles = {name: [] for name in runners}
    per_repeat = []  # each repeat's own ratio: how far the figure moves between repeats
    for _ in range(repeats):
        medians = {}
        for name, runner in runners.items():
            seconds, compile_seconds = runner(xs, ys, count, batch_size, epochs)
            timed[name] += seconds
            compiles[name].append(compile_seconds)
            medians[name] = common.median(seconds)
        per_repeat.append(medians["sequential"] / medians["stacked"])
    samples = count * train.steps_per_epoch(xs.shape[0], batch_size) * batch_size
    speed = {name: samples / common.median(values) for name, values in timed.items()}
    return {
        "speed": speed,
        "ratio": speed["stacked"] / speed["sequential"],
        "ratio_per_repeat": per_repeat,
        "compile_seconds": {name: common.median(v) for name, v in compiles.items()},
        "epochs_timed": {name: len(v) for name, v in timed.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: small data, M 1 and 4")
    parser.add_argument("--members", default=None, help="comma-separated M (default 1,4,8,32)")
    parser.add_argument("--batches", default="200,4096", help="comma-separated batch sizes")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per fit, the first untimed"
    )
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats")
    args = parser.parse_args(argv)
    counts = [int(v) for v in (args.members or ("1,4" if args.quick else "1,4,8,32")).split(",")]
    batches = [int(v) for v in args.batches.split(",")]
    epochs = args.epochs or (2 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 3)
    if epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch compiles and is not timed")
    images = data.demo_images(count=2 if args.quick else 5, size=64 if args.quick else 128)
    xs, ys = data.image_pairs(images)
    env = common.environment()
    common.emit({"kind": "environment", **env})
    rows = []
    for batch_size in batches:
        train.check_batch_size(batch_size, xs.shape[0])
    # M outermost: a run cut short by a time limit still has every batch size for the small M.
    for count in counts:
        for batch_size in batches:
            result = measure(
                xs, ys, count=count, batch_size=batch_size, epochs=epochs, repeats=repeats
            )
            for name, value in result["speed"].items():
                common.emit(
                    {
                        "kind": "stacked_train",
                        "members": count,
                        "batch_size": batch_size,
                        "contender": name,
                        "samples_per_second": round(value),
                        "ratio_stacked_over_sequential": round(result["ratio"], 3),
                        "ratio_per_repeat": [round(r, 3) for r in result["ratio_per_repeat"]],
                        "epochs_timed": result["epochs_timed"][name],
                        "compile_seconds": round(result["compile_seconds"][name], 2),
                        "training_pairs": int(xs.shape[0]),
                        **env,
                    }
                )
            speed = result["speed"]
            rows.append(
                [
                    count,
                    batch_size,
                    f"{speed['stacked'] / 1e3:.0f}k",
                    f"{speed['sequential'] / 1e3:.0f}k",
                    f"{result['ratio']:.2f}x",
                    "-".join(
                        f"{r:.2f}"
                        for r in sorted(result["ratio_per_repeat"])[:: max(1, repeats - 1)]
                    ),
                    f"{result['compile_seconds']['stacked']:.1f} / "
                    f"{result['compile_seconds']['sequential']:.1f}",
                ]
            )
    print()
    print(
        f"Aggregate training samples/s of M models on {env['device']} (JAX {env['jax']}); "
        f"{xs.shape[0]} pairs, {epochs - 1} timed epoch(s) per fit, {repeats} alternating "
        "repeat(s), medians; ratio = stacked / sequential (>1: stacking is faster)"
    )
    print()
    headers = [
        "M",
        "batch",
        "stacked",
        "sequential",
        "ratio",
        "per repeat",
        "compile s (stacked / seq.)",
    ]
    print(common.markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
