"""Each structure's training step with and without its transposed likelihood, side by side.

The reference workload (81,920 pairs from the five demo images, trunk 100,100,100,100,100,50,
K=10, Adam 1e-3) for each structure: `Trainer.epoch` with the structure's
`transposed_log_prob` (what `mdn_jax.step.model_loss` uses) against the same model with that
hook removed (the mixture path). Contenders alternate; medians of the timed epochs after a
compiling one. Prints one line per structure.

    python benchmarks/structure_layouts.py                     # per_dim and full, batch 200
    python benchmarks/structure_layouts.py --structures joint --batch 4096 --repeats 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from mdn_jax import data, model, structures, train  # noqa: E402
from mdn_jax.config import REFERENCE_TRUNK  # noqa: E402


def contender(xs, ys, structure: str, *, hook: bool, batch_size: int):
    """One epoch per call of `Trainer.epoch`, compiled with or without the hook."""
    named = structures.named
    if not hook:  # read at trace time, which the first call below does
        structures.named = lambda name: dataclasses.replace(named(name), transposed_log_prob=None)
    config = model.ModelConfig(
        hidden=REFERENCE_TRUNK,
        components=10,
        structure=structure,
        scale_floor=0.01,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    graphdef, params = model.init(config, key=jax.random.key(0))
    trainer = train.Trainer(graphdef, train.make_optimizer(train.TrainConfig(), total_steps=1))
    holder = {"state": trainer.init(params, key=jax.random.key(1)), "key": jax.random.key(2)}
    xs_device, ys_device = jax.device_put(xs), jax.device_put(ys)

    def run():
        holder["key"], key = jax.random.split(holder["key"])
        batches = train.shuffled_batches(key, xs.shape[0], batch_size)
        holder["state"], losses = trainer.epoch(holder["state"], xs_device, ys_device, batches)
        losses.block_until_ready()

    try:
        run()
    finally:
        structures.named = named
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", default="per_dim,full")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    xs, ys = data.image_pairs(data.demo_images(count=5, size=128))
    samples = train.steps_per_epoch(xs.shape[0], args.batch) * args.batch
    for structure in args.structures.split(","):
        runs = {
            name: contender(xs, ys, structure, hook=hook, batch_size=args.batch)
            for name, hook in (("transposed", True), ("mixture path", False))
        }
        times = common.alternate(runs, repeats=args.repeats)
        speed = {name: samples / common.median(values) for name, values in times.items()}
        ratio = speed["transposed"] / speed["mixture path"]
        figures = ", ".join(f"{name} {value / 1e3:.0f}k" for name, value in speed.items())
        print(f"{structure} batch {args.batch}: {figures} samples/s ({ratio:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
