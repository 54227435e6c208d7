"""The network's forward pass as a plain function of its params: the training hot path.

`mdn_jax.model.MDN` (NNX) stays the definition of the network and `model.apply` its forward pass
for everyone else. Training instead reads the kernels and biases straight out of the params
State and runs encoding, trunk and head as plain `jnp`: the same arithmetic in the same order
(tests/test_fast_step.py checks equality with `model.apply` for every encoding, structure and
dtype), with no module graph to rebuild, and with what only training needs: dropout on the
trunk's hidden layers, keyed per step.

Shapes: `x [..., in_features]`, raw head outputs `[..., head_size]`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mdn_jax import encoding, hashgrid
from mdn_jax.config import ModelConfig

# Folded into the train state's key (with the step) to key each step's dropout masks.
DROPOUT_TAG = 0x0D20


def _value(leaf) -> jax.Array:
    """An array from a State leaf (an `nnx.Variable`) or an array."""
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


def layers(params) -> list[tuple[jax.Array, jax.Array]]:
    """The trunk's `(kernel [in, out], bias [out])` pairs in order, then the head's."""
    trunk = params["trunk"]
    pairs = [(_value(trunk[i]["kernel"]), _value(trunk[i]["bias"])) for i in range(len(trunk))]
    head = params["head"]["linear"]
    return pairs + [(_value(head["kernel"]), _value(head["bias"]))]


def encode(config: ModelConfig, params, x: jax.Array) -> jax.Array:
    """Input normalisation and encoding: `x [..., in_features] -> [..., width]` float32, as
    `MDN.__call__` does it."""
    x = jnp.asarray(x, jnp.result_type(x, jnp.float32))  # integer inputs become float32
    if config.input_offset is not None:
        x = x - jnp.asarray(config.input_offset, x.dtype)
    if config.input_scale is not None:
        x = x / jnp.asarray(config.input_scale, x.dtype)
    if config.encoding == "fourier":
        return encoding.fourier_encode(x, encoding.fourier_matrix(config))
    if config.encoding == "hashgrid":
        low, high = encoding.hashgrid_box(config)
        unit = hashgrid.to_unit_box(x, low=low, high=high)
        table = _value(params["encoding"]["table"])
        return hashgrid.encode(table, unit, config=encoding.hashgrid_config(config)).astype(x.dtype)
    return x


def dropout(x: jax.Array, key: jax.Array, rate: float | jax.Array) -> jax.Array:
    """Inverted dropout: each entry of `x` zeroed with probability `rate`, the rest scaled by
    `1 / (1 - rate)`, so the expected output is `x`. `rate` may be traced (per-member rates)."""
    keep = jax.random.uniform(key, x.shape) >= rate
    return jnp.where(keep, x / (1.0 - jnp.asarray(rate, x.dtype)), jnp.zeros((), x.dtype))


def raw_outputs(
    config: ModelConfig,
    params,
    x: jax.Array,
    *,
    dropout_rate: float | jax.Array | None = None,
    key: jax.Array | None = None,
    transposed: bool = False,
) -> jax.Array:
    """The head's raw outputs `[..., head_size]` for `x [..., in_features]`.

    With `dropout_rate` (and `key`), each hidden layer's output goes through `dropout` with its
    own key (`fold_in(key, layer)`); None (default) is the evaluation forward of `model.apply`.
    `transposed=True` (for `x [B, in_features]` only) returns them as `[head_size, B]`, batch
    minor, straight from the head's matmul (no transpose op): the layout in which the training
    likelihood vectorises over the batch (see `mdn_jax.step.model_loss`).
    """
    h = encode(config, params, x)
    pairs = layers(params)
    compute = None if config.dtype == "float32" else jnp.dtype(config.dtype)
    activation = getattr(jax.nn, config.activation)
    for index, (kernel, bias) in enumerate(pairs[:-1]):
        h = activation(_linear(h, kernel, bias, compute))
        if dropout_rate is not None:
            h = dropout(h, jax.random.fold_in(key, index), dropout_rate)
    if h.dtype != jnp.float32:  # the head and the likelihood run in float32
        h = h.astype(jnp.float32)
    kernel, bias = pairs[-1]
    if transposed:
        if h.ndim != 2:
            raise ValueError(f"transposed raw outputs need inputs [B, in], got {x.shape}")
        kernel, bias = kernel.astype(h.dtype), bias.astype(h.dtype)
        return jax.lax.dot_general(kernel, h, (((0,), (1,)), ((), ()))) + bias[:, None]
    return _linear(h, kernel, bias, None)


def _linear(x, kernel, bias, dtype) -> jax.Array:
    """`nnx.Linear`'s arithmetic: promote to `dtype` (None: the common type), matmul, add bias."""
    if dtype is None:
        dtype = jnp.result_type(x, kernel, bias)
    x, kernel, bias = (a.astype(dtype) for a in (x, kernel, bias))
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


def step_key(key: jax.Array, step: Any) -> jax.Array:
    """The dropout key of optimiser step `step`: `fold_in(fold_in(key, DROPOUT_TAG), step)`."""
    return jax.random.fold_in(jax.random.fold_in(key, DROPOUT_TAG), step)
