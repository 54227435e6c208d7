"""Two processes on one machine, over loopback: multi-host data-parallel training on CPU.

    python examples/multihost_loopback.py [--out DIR] [--port PORT] [--epochs 2]

Starts two copies of itself, process 0 and process 1, each a separate JAX runtime with two
emulated CPU devices (so the mesh is 2 processes x 2 devices). They meet through

    jax.distributed.initialize(coordinator_address="localhost:PORT", num_processes=2, process_id=i)

and then run exactly what `mdn-jax train --distributed` runs on a cluster (mdn_jax.runs): each
process trains on its half of the pixels of two small built-in images, `--epochs` epochs, with
a checkpoint after every epoch; then both resume from that checkpoint for one more epoch. Each
process saves the params it holds in memory at the end, and this script checks that:

- both processes finished with bit-identical params (and so did every device within each);
- those params equal the ones in the final checkpoint;
- they are the params one process on one device trains from the same global batches: each
  epoch's batch b is process 0's b-th batch of its own shuffled rows, then process 1's
  (computed here, after the workers, from the rule documented in `mdn_jax.train.fit`), so
  each process really trained on its own share;
- only process 0 wrote the run folder's files (frames, renders, metrics), once.

Exit code 0 when every check holds, 1 otherwise; prints one JSON line of results. On a real
cluster the same code runs with one process per host (see the README, "Several devices and
hosts").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROCESSES = 2
DEVICES_PER_PROCESS = 2
SEED, BATCH_SIZE = 1, 64


def settings():
    """The images, model and training settings every process (and the reference) uses."""
    from mdn_jax import data, runs, train

    images = data.demo_images(count=2, size=16)
    return (
        images,
        runs.image_model_config(hidden=(16, 16), components=3),
        train.TrainConfig(batch_size=BATCH_SIZE, seed=SEED),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def worker(index: int, port: int, out: Path, epochs: int) -> None:
    """One process: join the others, train, resume, save what it holds in memory."""
    import jax

    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=PROCESSES, process_id=index
    )
    from mdn_jax import runs

    images, model_config, train_config = settings()
    options = runs.RunOptions(frame_every=1, checkpoint_every=1, samples=2, progress=False)
    first = dataclasses.replace(train_config, epochs=epochs)
    held = {}

    def keep_last(report):  # every device's copy of the params, as numpy, after each epoch
        held["params"] = [
            [np.asarray(shard.data) for shard in leaf.addressable_shards]
            for leaf in jax.tree_util.tree_leaves(report.state.params)
        ]
        held["epoch"] = report.epoch

    run = out / "run"
    runs.train_on_images(
        images,
        run,
        model_config=model_config,
        train_config=first,
        options=options,
        callbacks=[keep_last],
    )
    more = dataclasses.replace(
        first, epochs=epochs + 1
    )  # every process resumes from the checkpoint
    runs.train_on_images(
        images,
        run,
        model_config=model_config,
        train_config=more,
        options=options,
        resume=True,
        callbacks=[keep_last],
    )
    leaves = held["params"]
    np.savez(out / f"params_{index}.npz", *[copies[0] for copies in leaves])
    within = all(np.array_equal(copy, copies[0]) for copies in leaves for copy in copies)
    (out / f"process_{index}.json").write_text(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "epoch": held["epoch"],
                "devices_agree": within,
            }
        )
    )


def launch(out: Path, port: int, epochs: int, timeout: float) -> list[int]:
    """Start the processes and wait for all of them; their exit codes."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
    )
    root = str(Path(__file__).resolve().parents[1])  # run from a source checkout without installing
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(i),
                "--port",
                str(port),
                "--out",
                str(out),
                "--epochs",
                str(epochs),
            ],
            env=env,
        )
        for i in range(PROCESSES)
    ]
    deadline = time.monotonic() + timeout
    try:
        return [
            process.wait(timeout=max(1.0, deadline - time.monotonic())) for process in processes
        ]
    finally:
        for process in processes:  # one failed or timed out: do not leave the other waiting
            if process.poll() is None:
                process.kill()
                process.wait()


def reference_params(epochs: int):
    """What one device trains in `epochs` epochs from the batches the processes formed together."""
    import jax

    from mdn_jax import data, model, train

    images, model_config, train_config = settings()
    xs, ys = data.image_pairs(images)
    shares = [
        np.arange(p, xs.shape[0], PROCESSES) for p in range(PROCESSES)
    ]  # parallel.process_share
    per_process = BATCH_SIZE // PROCESSES
    num_batches = train.steps_per_epoch(max(len(share) for share in shares), per_process)
    init_key, key = jax.random.split(jax.random.key(SEED))
    graphdef, params = model.init(model_config, key=init_key)
    trainer = train.Trainer(
        graphdef, train.make_optimizer(train_config, total_steps=epochs * num_batches)
    )
    state = trainer.init(params, key=key)
    for _ in range(epochs):
        key, epoch_key = jax.random.split(state.key)
        rows = [
            share[
                train.shuffled_batches(
                    jax.random.fold_in(epoch_key, p),
                    len(share),
                    per_process,
                    num_batches=num_batches,
                )
            ]
            for p, share in enumerate(shares)
        ]
        state, _ = trainer.epoch(state._replace(key=key), xs, ys, np.concatenate(rows, axis=1))
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state.params)]


def check(out: Path, codes: list[int], epochs: int) -> dict:
    from mdn_jax import checkpoint

    results = {"exit_codes": codes}
    if any(codes):
        return {**results, "ok": False}
    reports = [json.loads((out / f"process_{i}.json").read_text()) for i in range(PROCESSES)]
    params = [np.load(out / f"params_{i}.npz") for i in range(PROCESSES)]
    saved = checkpoint.restore(out / "run" / "checkpoint")
    import jax

    stored = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(saved.state.params)]
    leaves = [[p[f"arr_{j}"] for j in range(len(p.files))] for p in params]
    results.update(
        processes=[r["process"] for r in reports],
        devices=reports[0]["devices"],
        epochs=[r["epoch"] for r in reports],
        checkpoint_epoch=saved.epoch,
        devices_agree=all(r["devices_agree"] for r in reports),
        processes_agree=all(np.array_equal(a, b) for a, b in zip(*leaves, strict=True)),
        checkpoint_agrees=all(np.array_equal(a, b) for a, b in zip(leaves[0], stored, strict=True)),
        difference_from_one_device=max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(leaves[0], reference_params(epochs + 1), strict=True)
        ),
        frames=len(list((out / "run" / "frames").glob("epoch_*.png"))),
        metrics=(out / "run" / "metrics.json").is_file(),
        stray_files=sorted(
            p.name
            for p in out.iterdir()
            if p.name
            not in {
                "run",
                *(f"params_{i}.npz" for i in range(PROCESSES)),
                *(f"process_{i}.json" for i in range(PROCESSES)),
            }
        ),
    )
    results["ok"] = bool(
        results["devices_agree"]
        and results["processes_agree"]
        and results["checkpoint_agrees"]
        and results["difference_from_one_device"] < 1e-5
        and results["epochs"] == [epochs + 1] * PROCESSES
        and saved.epoch == epochs + 1
        and results["frames"] == epochs + 1
        and results["metrics"]
        and not results["stray_files"]
        and results["devices"] == PROCESSES * DEVICES_PER_PROCESS
    )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="folder for the run (default: a temporary folder)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="coordinator port (default: a free one)"
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs before the resume (default 2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before giving up (default 300)"
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.port, Path(args.out), args.epochs)
        return 0
    with tempfile.TemporaryDirectory() as temporary:
        out = Path(args.out or temporary)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        codes = launch(out, args.port or free_port(), args.epochs, args.timeout)
        results = check(out, codes, args.epochs)
        results["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
