"""Boundary checks of the public mixture functions, each one ValueError line naming the fix.

Shapes are static, so `check_targets` works the same eagerly and under `jax.jit`. Values are
only known outside a trace: `check_scales` and `check_temperatures` test concrete values and
let traced ones through (under `jit` a negative scale gives NaN log densities and a negative or
NaN temperature gives meaningless draws, as documented in `mdn_jax.sample`; check the values
before tracing). These functions add no operation to a traced computation.
"""

from __future__ import annotations

import math

import jax
import numpy as np

HUGE_TARGET = 1e6  # beyond this the Gaussian densities of float32 training are ill-conditioned


def _concrete(value) -> np.ndarray | None:
    """`value` as a numpy array, or None while it is being traced."""
    if isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


def check_targets(y_shape: tuple[int, ...], *, event_size: int, batch_shape: tuple[int, ...]):
    """Refuse targets that are not `[..., D]` with batch axes broadcasting against the mixture's."""
    if len(y_shape) == 0 or y_shape[-1] != event_size:
        raise ValueError(
            f"y must have shape [..., {event_size}] (its last axis is the mixture's D = "
            f"{event_size}), got {tuple(y_shape)}; for D = 1 add the axis with y[..., None]"
        )
    try:
        np.broadcast_shapes(tuple(y_shape[:-1]), tuple(batch_shape))
    except ValueError:
        raise ValueError(
            f"y's batch axes {tuple(y_shape[:-1])} do not broadcast against the mixture's "
            f"{tuple(batch_shape)}; pass one target per mixture (or a shape that broadcasts)"
        ) from None


def check_scales(name: str, scales) -> None:
    """Refuse concrete standard deviations that are not positive (NaN included)."""
    values = _concrete(scales)
    if values is None or values.size == 0:
        return
    bad = ~(values > 0)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: scales are standard deviations and must be positive, got "
            f"{float(values[first])} at index {first} ({int(bad.sum())} not positive); map raw "
            "values through jnp.exp or jax.nn.softplus"
        )


def check_temperatures(**temperatures) -> None:
    """Refuse a concrete negative or NaN temperature (0 is allowed: the deterministic limit)."""
    for name, temperature in temperatures.items():
        values = _concrete(temperature)
        if values is None:
            continue
        if not np.all(values >= 0):  # NaN fails this too
            raise ValueError(
                f"{name} must be a non-negative number (0: deterministic), got "
                f"{values.tolist()!r}; use a value >= 0"
            )


def nonfinite_fix(ys) -> str:
    """What to change after a non-finite loss, given the targets `ys [N, D]`."""
    ys = np.asarray(ys)
    largest = float(np.max(np.abs(ys))) if ys.size else 0.0
    usual = (
        "lower the learning rate, clip gradients or raise the scale floor, or skip such steps "
        "(on_nonfinite='skip')"
    )
    if math.isfinite(largest) and largest > HUGE_TARGET:
        return (
            f"the targets reach {largest:.3g}: scale them to about unit size first (e.g. "
            f"(ys - ys.mean(0)) / ys.std(0)), or {usual}"
        )
    return usual
