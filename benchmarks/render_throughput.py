"""Rendering throughput and peak memory: `mode` and `sample` renders at several sizes and chunks.

The reference network (trunk 100,100,100,100,100,50, joint K=10, D=3), untrained (the cost does
not depend on the weights). Each (size, method, chunk) runs in a fresh process so its peak
resident memory (ru_maxrss) is its own; the compile run is excluded and timed separately.
Prints JSON lines, a markdown table, and the chunk size `mdn_jax.render` picks by default.

Then the contenders, side by side in one process on the same network shape: the `mode` render
at 1024x1024 by mdn_jax (`render_values`, default chunk), by a hand-written jitted, tiled JAX
render of a Linen MDN written without mdn_jax, and by keras-mdn-layer (`model.predict`, then the
heaviest component's mean in numpy; only when installed), alternating A B C A B C, medians,
with ratios from the same run (see contenders.py).

    python benchmarks/render_throughput.py           # quick: 128 and 1024; three chunk sizes
    python benchmarks/render_throughput.py --full    # 128, 1024 and 4096; five chunk sizes
    python benchmarks/render_throughput.py --compare-only --compare-repeats 1  # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import contenders as others  # noqa: E402

REFERENCE_TRUNK = (100, 100, 100, 100, 100, 50)

# Peak resident memory from /proc (VmHWM), not ru_maxrss, which Linux carries over from the
# parent process across fork and exec.
WORKER = r"""
import json, sys, time
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import jax
from mdn_jax import data, model, render
size, method, chunk = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
samples, repeats = int(sys.argv[4]), int(sys.argv[5])
config = model.ModelConfig(
    components=10, input_offset=data.IMAGE_INPUT_OFFSET, input_scale=data.IMAGE_INPUT_SCALE
)
graphdef, params = model.init(config, key=jax.random.key(0))
options = dict(
    height=size, width=size, method=method, pixels_per_chunk=chunk, key=jax.random.key(1),
    num_samples=samples,
)
start = time.perf_counter()
render.render_values(graphdef, params, **options)
first = time.perf_counter() - start
times = []
for _ in range(repeats):
    start = time.perf_counter()
    render.render_values(graphdef, params, **options)
    times.append(time.perf_counter() - start)
times.sort()
print(json.dumps({"first_seconds": first, "seconds": times[len(times) // 2],
                  "peak_rss_mb": peak_mb()}))
"""


def measure(size: int, method: str, chunk: int, samples: int, repeats: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(size), method, str(chunk), str(samples), str(repeats)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_mode_renders(size: int, repeats: int, env: dict) -> list[list]:
    """mdn_jax's mode render against the hand-written and Keras ones; markdown rows."""
    import jax

    from mdn_jax import data, model, render

    config = model.ModelConfig(
        hidden=REFERENCE_TRUNK,
        components=10,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    graphdef, params = model.init(config, key=jax.random.key(0))
    contenders = {
        "mdn_jax": lambda: render.render_values(
            graphdef, params, height=size, width=size, method="mode"
        ),
        "handwritten": others.handwritten_render(hidden=REFERENCE_TRUNK, size=size),
    }
    if others.keras_available():
        contenders["keras"] = others.keras_render(hidden=REFERENCE_TRUNK, size=size)
    else:
        print("keras-mdn-layer not installed: skipping it", file=sys.stderr)
    first = {name: common.timed(run) for name, run in contenders.items()}  # compile + one run
    times = common.alternate(contenders, repeats=repeats)
    speed = {name: size * size / common.median(values) for name, values in times.items()}
    rows = []
    for name, value in speed.items():
        ratio = speed["mdn_jax"] / value
        common.emit(
            {
                "kind": "render-contenders",
                "size": size,
                "method": "mode",
                "contender": name,
                "pixels_per_second": round(value),
                "repeats": repeats,
                "ratio_mdn_jax_over_this": round(ratio, 3),
                "compile_and_first_seconds": round(first[name], 2),
                **env,
            }
        )
        rows.append([f"{size}x{size}", name, f"{value / 1e6:.2f}M", f"{ratio:.2f}x"])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="128, 1024 and 4096 pixels square, five chunk sizes, 4 samples",
    )
    parser.add_argument(
        "--samples", type=int, default=None, help="draws per pixel for sample (default 2, --full 4)"
    )
    parser.add_argument(
        "--compare-only", action="store_true", help="only the side-by-side contender renders"
    )
    parser.add_argument("--compare-size", type=int, default=1024, help="contender render size")
    parser.add_argument(
        "--compare-repeats", type=int, default=None, help="timed renders each (default 5, --full 9)"
    )
    args = parser.parse_args(argv)
    from mdn_jax import render

    args.samples = args.samples or (4 if args.full else 2)
    env = common.environment()
    common.emit({"kind": "environment", **env})
    sizes = [] if args.compare_only else [128, 1024, 4096] if args.full else [128, 1024]
    chunks = [4096, 16384, 65536, 262144, 1 << 20] if args.full else [4096, 65536, 262144]
    rows = []
    for size in sizes:
        for method in ("mode", "sample"):
            size_chunks = [c for c in chunks if c <= max(size * size, chunks[0])]
            for chunk in size_chunks:
                repeats = 3 if size <= 128 or (args.full and size <= 1024) else 1
                result = measure(size, method, chunk, args.samples, repeats)
                pixels = size * size * (args.samples if method == "sample" else 1)
                record = {
                    "kind": "render",
                    "size": size,
                    "method": method,
                    "pixels_per_chunk": chunk,
                    "samples": args.samples if method == "sample" else 1,
                    "pixels_per_second": round(pixels / result["seconds"]),
                    "seconds": round(result["seconds"], 4),
                    "compile_and_first_seconds": round(result["first_seconds"], 3),
                    "peak_rss_mb": round(result["peak_rss_mb"], 1),
                    **env,
                }
                common.emit(record)
                rows.append(
                    [
                        f"{size}x{size}",
                        method + (f" x{args.samples}" if method == "sample" else ""),
                        chunk,
                        f"{record['pixels_per_second'] / 1e6:.2f}M",
                        f"{record['seconds']:.3f}",
                        f"{record['peak_rss_mb']:.0f}",
                    ]
                )
    if rows:  # none with --compare-only
        print()
        print(
            f"Rendering on {env['device']} (JAX {env['jax']}); reference network, "
            "median of timed runs; "
            f"default chunk: {render.DEFAULT_PIXELS_PER_CHUNK} pixels (tiles of {render.TILE})"
        )
        print()
        print(
            common.markdown_table(
                ["size", "method", "chunk (pixels)", "pixels/s", "seconds", "peak RSS MB"], rows
            )
        )
    repeats = args.compare_repeats or (9 if args.full else 5)
    rows = compare_mode_renders(args.compare_size, repeats, env)
    print()
    print(
        f"Mode render, contenders side by side (median of {repeats}, alternating); "
        "ratio = mdn_jax / contender (>1: mdn_jax is faster)"
    )
    print()
    print(common.markdown_table(["size", "contender", "pixels/s", "mdn_jax speed-up"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
