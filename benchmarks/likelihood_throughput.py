"""Mixture likelihood throughput: `log_prob` plus its gradient, evaluations per second.

For K in {1, 10, 100}, D in {1, 3, 16} and the three structures: one jitted function computes
the summed log-likelihood of a batch of B samples and its gradient with respect to every
mixture parameter; an evaluation is one sample's value and gradient.

    python benchmarks/likelihood_throughput.py           # quick: B = 4096
    python benchmarks/likelihood_throughput.py --full    # B = 65536, more repeats
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import mdn_jax  # noqa: E402


def random_mixture(structure: str, batch: int, k: int, d: int, key):
    keys = jax.random.split(key, 4)
    if structure == "per_dim":
        shape = (batch, d, k)
        return mdn_jax.per_dim(
            jax.random.normal(keys[0], shape),
            jax.random.normal(keys[1], shape),
            jnp.exp(0.3 * jax.random.normal(keys[2], shape)),
        )
    logits = jax.random.normal(keys[0], (batch, k))
    means = jax.random.normal(keys[1], (batch, k, d))
    if structure == "joint":
        return mdn_jax.joint(
            logits, means, jnp.exp(0.3 * jax.random.normal(keys[2], (batch, k, d)))
        )
    tril = 0.1 * jnp.tril(jax.random.normal(keys[2], (batch, k, d, d)), -1) + jnp.eye(d)
    return mdn_jax.full(logits, means, tril)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger batches, more repeats")
    args = parser.parse_args(argv)
    batch = 65536 if args.full else 4096
    repeats = 7 if args.full else 3
    env = common.environment()
    common.emit({"kind": "environment", **env})

    @jax.jit
    def value_and_grad(mixture, y):
        return jax.value_and_grad(lambda m: jnp.sum(mdn_jax.log_prob(m, y)))(mixture)

    rows = []
    for structure in ("joint", "per_dim", "full"):
        for k in (1, 10, 100):
            for d in (1, 3, 16):
                mixture = random_mixture(structure, batch, k, d, jax.random.key(k * 100 + d))
                y = jax.random.normal(jax.random.key(1), (batch, d))
                call = lambda: jax.block_until_ready(value_and_grad(mixture, y))  # noqa: E731
                compile_seconds = common.timed(call)
                seconds = common.median([common.timed(call) for _ in range(repeats)])
                rate = batch / seconds
                common.emit(
                    {
                        "kind": "likelihood",
                        "structure": structure,
                        "components": k,
                        "dims": d,
                        "batch": batch,
                        "evaluations_per_second": round(rate),
                        "compile_seconds": round(compile_seconds, 3),
                        **env,
                    }
                )
                rows.append([structure, k, d, f"{rate:,.0f}"])
    print()
    print(
        f"log_prob + gradient on {env['device']} (JAX {env['jax']}); batch {batch}; "
        f"median of {repeats}"
    )
    print()
    print(common.markdown_table(["structure", "K", "D", "evaluations/s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
