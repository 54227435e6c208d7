"""Photo fidelity, end to end: `mdn-jax train` (or `mdn-jax demo`) with each contender's flags,
run in alternation, scored from the run folder's metrics.json.

Five photographs that scikit-image ships (`hashgrid_photo_probe.load_photos`: centre-cropped,
128x128, 8-bit) are written as PNGs and trained on by the real command line in a subprocess, so
the time is what a user waits for (start-up, compilation, training, frames, final pictures).
Every round runs each contender once, in turn (A B C A B C ...), so load on a shared machine hits
all alike; the table gives per contender the median wall time and training time (metrics.json's
`seconds`) and the scores of its last round: NLL (nats per pixel, all channels), bits per channel
(8-bit discretised likelihood) and coverage PSNR per photo (the closest component mean, dB).

The wall-time budget is the reference's: each contender's epochs are fixed so that it needs no
more time than the default run before the hash grid (`reference`, 100 epochs); the `vs ref`
column is its median wall time over the reference's. `hashgrid` is today's default
(`mdn-jax train` with no flags), `hashgrid-100` the same at 100 epochs (ask for it by name).
A seconds budget that stops runs early would cut the cosine schedules short: their rate decays
over the epochs they were given.

    python benchmarks/photo_fidelity.py              # photos: reference, fourier, hashgrid
    python benchmarks/photo_fidelity.py --rounds 2 --contenders reference hashgrid hashgrid-100
    python benchmarks/photo_fidelity.py --demo       # the built-in demo instead
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from hashgrid_photo_probe import PHOTOS, load_photos  # noqa: E402

# Today's (before the hash grid) defaults of `mdn-jax train`, written out so that the contender
# stays the same when the defaults change.
REFERENCE = (
    "--encoding identity --hidden 100,100,100,100,100,50 --batch-size 200 --lr 1e-3 "
    "--schedule constant --init random"
)
HASHGRID = (
    "--encoding hashgrid --hidden 64,64 --batch-size 4096 --lr 1e-2 --schedule cosine "
    "--init spread --adam-b2 0.99 --adam-eps 1e-15 --hashgrid-levels 8 --hashgrid-features 4 "
    "--hashgrid-log2-table 15 "
    "--hashgrid-min-res 16 --hashgrid-max-res 256"
)
# name -> flags; each with the epochs that keep it within the reference's wall time.
PHOTO_CONTENDERS = {
    "reference": REFERENCE + " --epochs 100",
    "fourier": REFERENCE.replace("identity", "fourier").replace("random", "spread")
    + " --fourier-features 128 --fourier-scale 3 --epochs 60",
    "hashgrid": HASHGRID + " --epochs 60",  # today's default
    "hashgrid-100": HASHGRID + " --epochs 100",  # the moonshot, at about the reference's time
}
# `mdn-jax demo` runs 60 epochs by default.
DEMO_CONTENDERS = {
    "reference": REFERENCE + " --epochs 60",
    "hashgrid": HASHGRID + " --epochs 60",
}


def run_once(command: list[str], out: str) -> dict:
    """Run one training command into `out`; its metrics.json plus the wall seconds."""
    env = {**os.environ, "PYTHONPATH": _repo_path()}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mdn_jax.cli", *command, "--out", out, "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.json")) as file:
        metrics = json.load(file)
    metrics.pop("history", None)  # one record per epoch: in the run folder, not the output
    return {"wall_seconds": wall, **metrics}


def _repo_path() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="train `mdn-jax demo`, not photos")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each contender")
    parser.add_argument("--contenders", nargs="+", help="names to run (default: all but -100)")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folders here")
    args = parser.parse_args(argv)
    table = DEMO_CONTENDERS if args.demo else PHOTO_CONTENDERS
    names = args.contenders or [n for n in table if not n.endswith("-100")]
    unknown = sorted(set(names) - set(table))
    if unknown:
        parser.error(f"unknown contenders {unknown}; known: {sorted(table)}")
    env = common.environment()
    common.emit({"kind": "environment", **env})
    work = args.keep or tempfile.mkdtemp(prefix="photo_fidelity_")
    if args.demo:
        inputs = ["demo"]
    else:
        import skimage.io

        photos, _ = load_photos(128)
        folder = os.path.join(work, "photos")
        os.makedirs(folder, exist_ok=True)
        for name, photo in zip(PHOTOS, photos):
            pixels = np.round(photo * 255).astype(np.uint8)
            skimage.io.imsave(os.path.join(folder, f"{name}.png"), pixels, check_contrast=False)
        inputs = ["train", folder]
    results: dict[str, list[dict]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names:
            out = os.path.join(work, f"{name}-{round_index}")
            result = run_once([*inputs, *table[name].split()], out)
            results[name].append(result)
            common.emit(
                {
                    "kind": "photo_fidelity",
                    "contender": name,
                    "round": round_index,
                    "flags": table[name],
                    "demo": args.demo,
                    **result,
                    **env,
                }
            )
    report(results, table, env, demo=args.demo)
    return 0


def report(results: dict[str, list[dict]], table: dict[str, str], env: dict, *, demo) -> None:
    walls = {
        name: float(np.median([r["wall_seconds"] for r in rs])) for name, rs in results.items()
    }
    reference = walls.get("reference")
    rows = []
    for name, runs in results.items():
        last = runs[-1]
        rows.append(
            [
                name,
                f"{last['nll_nats']:.2f}",
                f"{last['bits_per_channel']:.2f}",
                " ".join(f"{v:.1f}" for v in last["coverage_psnr"]),
                f"{min(last['coverage_psnr']):.1f}",
                f"{walls[name]:.0f}",
                f"{np.median([r['seconds'] for r in runs]):.0f}",
                f"{walls[name] / reference:.2f}" if reference else "",
            ]
        )
    what = "the demo's 5 images" if demo else "photos " + ", ".join(PHOTOS)
    print()
    print(
        f"{what}, 128x128, joint K=10, on {env['device']} (JAX {env['jax']}); median of "
        f"{len(next(iter(results.values())))} round(s), contenders alternating"
    )
    print()
    headers = [
        "contender",
        "NLL nats/px",
        "bits/ch",
        "coverage PSNR dB",
        "min",
        "wall s",
        "train s",
        "vs ref",
    ]
    print(common.markdown_table(headers, rows))
    print()
    for name in results:
        print(f"- {name}: {table[name]}")


if __name__ == "__main__":
    sys.exit(main())
