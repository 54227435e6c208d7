"""The flat carry of the scanned epoch: params and optimiser state raveled and padded.

`mdn_jax.step` keeps params and Adam's moments as one flat float vector `[P]` inside the epoch's
scan, zero-padded to `[P']`, a multiple of `FLAT_ALIGNMENT`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def flat_size(params) -> int:
    """The number of floats in `params` raveled: `P`."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params))


# The scanned epoch carries the flat params and their optimiser state padded with zeros to a
# multiple of this. XLA:CPU runs the optimiser's elementwise update over an odd-length vector
# about 2.5x slower than over an even one (2-core Xeon: 110 us against 44 us per step for 46,107
# params, the reference trunk with a one-component head); the zeros have zero gradients, so
# Adam leaves them zero and the real entries get exactly the same arithmetic.
FLAT_ALIGNMENT = 8


def pad_flat(tree, size: int):
    """`tree` with every `[size]` leaf (the flat params, Adam's moments) zero-padded to
    `[ceil(size / FLAT_ALIGNMENT) * FLAT_ALIGNMENT]`; other leaves (step counts) unchanged."""
    extra = -size % FLAT_ALIGNMENT
    if not extra:
        return tree
    return jax.tree.map(lambda a: jnp.pad(a, (0, extra)) if jnp.shape(a) == (size,) else a, tree)


def unpad_flat(tree, size: int):
    """The inverse of `pad_flat`: every padded leaf cut back to `[size]`."""
    padded = size + (-size % FLAT_ALIGNMENT)
    if padded == size:
        return tree
    return jax.tree.map(lambda a: a[:size] if jnp.shape(a) == (padded,) else a, tree)
