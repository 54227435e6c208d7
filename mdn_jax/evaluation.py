"""Held-out evaluation: the mean negative log-likelihood of a trained model, in chunks.

`mdn_jax.train` re-exports `evaluate_nll`, so `train.evaluate_nll` and `mdn_jax.evaluate_nll`
keep working.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax import parallel


@functools.partial(jax.jit, static_argnums=0)
def _nll_sum(graphdef, params, x: jax.Array, y: jax.Array) -> jax.Array:
    """Summed negative log-likelihood of `x [B, in]`, `y [B, D]`, a scalar (jit's own cache)."""
    return -jnp.sum(mx.log_prob(mdl.apply(graphdef, params, x), y))


def evaluate_nll(graphdef, params, xs, ys, *, chunk_size: int = 16384) -> float:
    """Mean negative log-likelihood in nats per sample over `xs [N, in]`, `ys [N, D]`, in chunks."""
    params = parallel.local(params)  # one device's copy: replicated params would repeat the work
    xs, ys = np.asarray(xs, np.float32), np.asarray(ys, np.float32)
    total = 0.0
    for start in range(0, xs.shape[0], chunk_size):
        end = start + chunk_size
        total += float(_nll_sum(graphdef, params, xs[start:end], ys[start:end]))
    return total / xs.shape[0]
