"""Hash-grid encoding throughput: `encode` and its gradient (the scatter-add), samples per second.

For each level count and table size: one jitted call encodes a batch of B random points
(`encode`), another computes the gradient of `sum(cotangent * encode)` with respect to the
tables (`gradient`: the gather's transpose, a scatter-add into the rows read). A sample is one
point. Both run after a warm-up call that compiles them; each time blocks until the result is
ready; the table reports medians.

    python benchmarks/hashgrid_throughput.py                 # quick: B = 16384, 3 repeats
    python benchmarks/hashgrid_throughput.py --full          # B = 262144, 7 repeats
    python benchmarks/hashgrid_throughput.py --dims 3 --levels 16 --log2-table-sizes 19
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from mdn_jax import hashgrid as hg  # noqa: E402


def contenders(config: hg.HashGridConfig, batch: int, dims: int):
    """The two jitted calls for one config, with their inputs bound: name -> blocking call."""
    keys = jax.random.split(jax.random.key(0), 3)
    tables = hg.init_hashgrid(keys[0], config=config)
    points = jax.random.uniform(keys[1], (batch, dims))
    cotangent = jax.random.normal(keys[2], (batch, config.output_size))

    @jax.jit
    def forward(tables, points):
        return hg.encode(tables, points, config=config)

    @jax.jit
    def gradient(tables, points, cotangent):
        return jax.grad(lambda t: jnp.sum(cotangent * hg.encode(t, points, config=config)))(tables)

    return {
        "encode": lambda: jax.block_until_ready(forward(tables, points)),
        "gradient": lambda: jax.block_until_ready(gradient(tables, points, cotangent)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger batches, more repeats")
    parser.add_argument("--dims", type=int, default=2, help="input dimensions (default 2)")
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--log2-table-sizes", type=int, nargs="+", default=[12, 15, 19])
    parser.add_argument("--features", type=int, default=2, help="features per level")
    parser.add_argument("--coarsest", type=int, default=16)
    parser.add_argument("--finest", type=int, default=1024)
    args = parser.parse_args(argv)
    batch = 262144 if args.full else 16384
    repeats = 7 if args.full else 3
    env = common.environment()
    common.emit({"kind": "environment", **env})

    rows = []
    for levels in args.levels:
        for log2_table_size in args.log2_table_sizes:
            config = hg.HashGridConfig(
                levels=levels,
                features_per_level=args.features,
                log2_table_size=log2_table_size,
                coarsest_resolution=args.coarsest,
                finest_resolution=args.finest if levels > 1 else args.coarsest,
            )
            calls = contenders(config, batch, args.dims)
            compile_seconds = {name: common.timed(call) for name, call in calls.items()}
            times = common.alternate(calls, repeats=repeats)
            rates = {name: batch / common.median(seconds) for name, seconds in times.items()}
            dense = sum(hg.dense_levels(config, args.dims))
            common.emit(
                {
                    "kind": "hashgrid",
                    "dims": args.dims,
                    "levels": levels,
                    "dense_levels": dense,
                    "features_per_level": args.features,
                    "log2_table_size": log2_table_size,
                    "resolutions": [args.coarsest, config.finest_resolution],
                    "batch": batch,
                    "encode_samples_per_second": round(rates["encode"]),
                    "gradient_samples_per_second": round(rates["gradient"]),
                    "compile_seconds": {k: round(v, 3) for k, v in compile_seconds.items()},
                    **env,
                }
            )
            rows.append(
                [
                    levels,
                    dense,
                    f"2^{log2_table_size}",
                    f"{rates['encode']:,.0f}",
                    f"{rates['gradient']:,.0f}",
                    f"{rates['gradient'] / rates['encode']:.2f}",
                ]
            )
    print()
    print(
        f"hash-grid encode and gradient on {env['device']} (JAX {env['jax']}); {args.dims}-D "
        f"points, {args.features} features per level, resolutions {args.coarsest} to "
        f"{args.finest}; batch {batch}; median of {repeats}"
    )
    print()
    headers = ["levels", "dense", "table", "encode samples/s", "gradient samples/s", "ratio"]
    print(common.markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
