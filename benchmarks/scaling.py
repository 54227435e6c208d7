"""Data-parallel scaling: training samples/s on 1, 2 and 4 devices, float32 and bfloat16.

The reference workload of train_throughput.py (81,920 pairs from the five demo images, trunk
100,100,100,100,100,50, joint K=10 over D=3, Adam 1e-3), trained with mdn_jax's scanned epoch
(Trainer.epoch) at a fixed global batch: each device count splits the same batch (strong
scaling), the dtype is the trunk's compute dtype (ModelConfig.dtype). Every measurement is a
fixed number of steps (about half an epoch) including the host-side shuffle and the placement
of the batch indices, as `fit` does; contenders alternate (A B C ... A B C ...), compilation is
excluded, figures are medians.

On a CPU-only host the devices are emulated (XLA_FLAGS=--xla_force_host_platform_device_count=4,
set by this script before JAX starts): they share the same cores, so the table measures the
overhead of sharding and the all-reduce, not a speed-up from more hardware. (Emulated devices
can still beat one CPU device: each runs its own thread, which can keep the cores busier than
one device's small matrix products do.)
On a GPU/TPU host the real devices are used (device counts above what the host has are skipped).

    python benchmarks/scaling.py                        # batch 4096
    python benchmarks/scaling.py --batch-sizes 200,4096 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import sys

if "jax" not in sys.modules and "xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""
):
    # Only the host (CPU) platform reads this; on a GPU/TPU host jax.devices() is the accelerators.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from mdn_jax import data, model, parallel, train  # noqa: E402
from mdn_jax.config import REFERENCE_TRUNK  # noqa: E402

DEVICE_COUNTS = (1, 2, 4)
TARGET_SAMPLES = 40960  # per measurement: half an epoch of the reference data


def contender(xs, ys, *, devices: int, dtype: str, batch_size: int, steps: int, seed: int = 0):
    """A callable that trains `steps` batches on `devices` devices and blocks; and its compile
    time."""
    config = model.ModelConfig(
        hidden=REFERENCE_TRUNK,
        components=10,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
        scale_floor=0.01,
        dtype=dtype,
    )
    graphdef, params = model.init(config, key=jax.random.key(seed))
    mesh = parallel.data_mesh(devices) if devices > 1 else None  # one device: fit's unsharded path
    trainer = train.Trainer(
        graphdef, train.make_optimizer(train.TrainConfig(), total_steps=1), mesh=mesh
    )
    if mesh is None:
        xs_device, ys_device = jax.device_put(xs), jax.device_put(ys)
    else:
        xs_device, ys_device = (
            parallel.put_training_data(a, mesh, max_rows=a.shape[0]) for a in (xs, ys)
        )
    holder = {
        "state": trainer.init(params, key=jax.random.key(seed + 1)),
        "key": jax.random.key(seed + 2),
    }

    def run():
        holder["key"], key = jax.random.split(holder["key"])
        batches = train.shuffled_batches(key, xs.shape[0], batch_size, num_batches=steps)[:steps]
        if mesh is not None:
            batches = parallel.put_batch_indices(batches, mesh)
        holder["state"], losses = trainer.epoch(holder["state"], xs_device, ys_device, batches)
        losses.block_until_ready()

    return run, common.timed(run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-sizes", default="4096", help="comma-separated global batch sizes (default 4096)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats per contender (default 3)"
    )
    parser.add_argument(
        "--dtypes", default="float32,bfloat16", help="comma-separated compute dtypes"
    )
    args = parser.parse_args(argv)
    xs, ys = data.image_pairs(data.demo_images(count=5, size=128))
    env = common.environment()
    platform = jax.devices()[0].platform
    emulated = platform == "cpu"
    common.emit({"kind": "environment", "emulated_devices": emulated, **env})
    counts = [n for n in DEVICE_COUNTS if n <= jax.device_count()]
    skipped = [n for n in DEVICE_COUNTS if n > jax.device_count()]
    if skipped:
        print(
            f"skipping {skipped} devices: this host has {jax.device_count()} {platform} device(s)",
            file=sys.stderr,
        )
    dtypes = args.dtypes.split(",")
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        steps = max(1, TARGET_SAMPLES // batch_size)
        contenders, compile_seconds = {}, {}
        for dtype in dtypes:
            for devices in counts:
                parallel.check_batch_size(batch_size, devices)
                name = (devices, dtype)
                contenders[name], compile_seconds[name] = contender(
                    xs, ys, devices=devices, dtype=dtype, batch_size=batch_size, steps=steps
                )
        times = common.alternate(contenders, repeats=args.repeats)
        speed = {name: steps * batch_size / common.median(values) for name, values in times.items()}
        for (devices, dtype), value in speed.items():
            versus_one = value / speed[(1, dtype)]
            versus_float32 = (
                value / speed[(devices, "float32")] if (devices, "float32") in speed else None
            )
            common.emit(
                {
                    **env,
                    "kind": "scaling",
                    "batch_size": batch_size,
                    "devices": devices,
                    "dtype": dtype,
                    "samples_per_second": round(value),
                    "versus_one_device": round(versus_one, 3),
                    "versus_float32": None if versus_float32 is None else round(versus_float32, 3),
                    "steps_timed": steps,
                    "repeats": args.repeats,
                    "compile_seconds": round(compile_seconds[(devices, dtype)], 2),
                    "emulated_devices": emulated,
                    "devices_seen": jax.device_count(),
                }
            )
            rows.append(
                [
                    batch_size,
                    devices,
                    dtype,
                    f"{value / 1e3:.0f}k",
                    f"{versus_one:.2f}x",
                    "" if versus_float32 is None else f"{versus_float32:.2f}x",
                ]
            )
    print()
    kind = (
        f"{jax.device_count()} emulated CPU devices sharing {os.cpu_count()} cores: "
        "this measures the overhead "
        "of sharding and the gradient all-reduce, not a speed-up from more hardware"
        if emulated
        else f"{jax.device_count()} {env['device']} devices"
    )
    print(
        "Training samples/s, scanned epoch, reference trunk, global batch split over the devices; "
        f"{kind} "
        f"(JAX {env['jax']}, Flax {env['flax']}, Optax {env['optax']}); median of {args.repeats}"
    )
    print()
    print(
        common.markdown_table(
            ["batch", "devices", "dtype", "samples/s", "vs 1 device", "vs float32"], rows
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
