"""A stacked epoch with the members in turn (CPU): members in groups, each group one scan.

Where `stacked.members_in_turn` (CPU), the members train `group_size(B)` at a time (`GROUP`, or
one from batch 2048, where each member's batch is already two chains): each group's epochs
are ONE scan (`step.flat_epochs`, one step of each member per iteration: independent chains
that XLA runs side by side on two cores), called once per group. The program takes the member
indices and settings as arguments (compiled once, plus once for a last smaller group), and
carries the members' flat params and optimiser state as donated arguments it returns as they
are: the layout of `mdn_jax.trainer.Trainer.epoch`, which ran the reference step at batch 200
about 8% faster than a scan carrying buffers made inside its own program. The calls are
dispatched back to back; one more program unravels and stacks the results, which equal
`stacked.stacked_epoch`'s and each member's `train.fit` (tests/test_stacked_in_turn.py,
tests/test_stacked_groups.py).

Shapes: every leaf of `states` and `settings` has the leading model axis `[M]`;
`batch_indices [M, num_batches, B]`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from mdn_jax import backend_tuning, step
from mdn_jax import stacked_members as sm


def member_training(base, loss, wide, shared, member):
    """`(optimizer, loss, dropout_rate)` of one member (`member`: its `sm.Settings`, no model
    axis): the shared optimiser with the member's rate, the loss with its floor shift, and its
    own dropout rate (None where all members share the config's)."""
    member_loss = loss
    if not shared.floor:

        def member_loss(mixture, y):
            return loss(sm.shift_floor(mixture, member.floor_shift, config=wide), y)

    optimizer = sm.member_optimizer(base, member, shared=shared)
    return optimizer, member_loss, None if shared.dropout else member.dropout


def _member(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


def member_carries(placement, states):
    """`[(flat [P], opt_state)] * M`: every member's params raveled, with its optimiser state."""
    count = jax.tree.leaves(states)[0].shape[0]
    carries = []
    for index in range(count):
        state = _member(states, index)
        carries.append((ravel_pytree(state.params)[0], state.opt_state))
    return placement.pin_replicated(carries)


def group_epoch(
    graphdef, base, loss, placement, wide, shared, states, group, carries, settings, xs, ys, batches
):
    """The epochs of the members `group` (traced int32 `[G]`) in one scan (`step.flat_epochs`),
    each on its carry: `[(flat, opt_state, losses)] * G`. `states` gives only each member's
    layout, step and key."""
    members = []
    for slot, carry in enumerate(carries):
        index = group[slot]
        state, member = _member(states, index), _member(settings, index)
        optimizer, member_loss, rate = member_training(base, loss, wide, shared, member)
        indices = jax.lax.dynamic_index_in_dim(batches, index, keepdims=False)
        members.append((optimizer, member_loss, state, carry, indices, rate))
    return step.flat_epochs(graphdef, placement, members, xs, ys)


# Members per scan. Aggregate samples/s of 4 stacked reference models on the 2-core Xeon, groups
# of 1 / 2 / 4: 270k / 305k / 345k at batch 200; at batch 4096, where each member's batch is
# already two chains (`backend_tuning.batch_chains`), 502k / 482k / 456k.
GROUP = 4


def group_size(batch_size: int) -> int:
    """Members per scan for batches of `batch_size`: `GROUP`, or 1 where the batch is split."""
    return 1 if backend_tuning.batch_chains(batch_size) > 1 else GROUP


def finished(placement, states, results):
    """`(states, losses [M, num_batches])` from every member's `group_epoch` results."""
    members, losses = [], []
    for index, (flat, opt_state, member_losses) in enumerate(results):
        state, member_losses = step.finished_epoch(
            placement, _member(states, index), flat, opt_state, member_losses
        )
        members.append(state)
        losses.append(member_losses)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
    return stacked, jnp.stack(losses)


class InTurnEpochs:
    """`run(states, settings, xs, ys, batch_indices) -> (states, losses [M, num_batches])`, as
    `stacked.stacked_epoch`, in the layout above."""

    def __init__(self, graphdef, base, loss, placement, wide, shared):
        options = backend_tuning.compiler_options()
        bound = (graphdef, base, loss, placement, wide, shared)
        self._carries = jax.jit(functools.partial(member_carries, placement))
        self._epochs = jax.jit(
            functools.partial(group_epoch, *bound), donate_argnums=2, compiler_options=options
        )
        self._finished = jax.jit(functools.partial(finished, placement))

    def __call__(self, states, settings, xs, ys, batch_indices):
        carries = self._carries(states)
        size = group_size(batch_indices.shape[-1])
        results = []
        for first in range(0, len(carries), size):
            group = list(range(first, min(first + size, len(carries))))
            members = jnp.asarray(group, jnp.int32)
            own = [carries[index] for index in group]
            results += self._epochs(states, members, own, settings, xs, ys, batch_indices)
        return self._finished(states, results)
