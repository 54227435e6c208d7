"""The compiled part of training: one guarded optimiser step, and one epoch as a `lax.scan` of it.

Hot path (`model_loss`): the pure forward of `mdn_jax.forward`, the structure's likelihood on
the head's outputs transposed where it has one (batch minor, what XLA:CPU vectorises), autodiff
(closed forms: `CLOSED_FORM_BACKENDS`), the scan unrolled and large batches split into
independent chains per backend (`mdn_jax.backend_tuning`). Dropout is keyed by the state's key
and the step number, so a resumed run draws the same masks. Pure functions of `(graphdef,
optimizer, loss, placement)` and the arrays; `mdn_jax.trainer.Trainer` jits them. Params and
the optimiser state travel as one flat, padded float vector (`mdn_jax.flat_carry`); the state's
`params` is always the params pytree. Where arrays live is `placement`'s business
(`mdn_jax.parallel.Placement`; on one device its hooks are the identity).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from mdn_jax import backend_tuning, fastgrad, forward, parallel, structures
from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax.backend_tuning import scan_unroll as scan_unroll
from mdn_jax.discretised import discretised_nll_loss
from mdn_jax.flat_carry import FLAT_ALIGNMENT as FLAT_ALIGNMENT
from mdn_jax.flat_carry import flat_size, pad_flat, unpad_flat
from mdn_jax.run_setup import make_optimizer as make_optimizer
from mdn_jax.run_setup import shuffled_batches as shuffled_batches
from mdn_jax.run_setup import steps_per_epoch as steps_per_epoch

LossFn = Callable[[mx.Mixture, jax.Array], jax.Array]


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree.

    params: the model's params pytree. opt_state: optimiser state of the flattened params.
    step: number of optimiser steps taken (int32 scalar). key: PRNG key for the shuffle.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def init_state(params, optimizer: optax.GradientTransformation, *, key: jax.Array) -> TrainState:
    """A fresh state for `params` (not copied, not placed: see `Placement.put_state`)."""
    flat, _ = ravel_pytree(params)
    return TrainState(params, optimizer.init(flat), jnp.zeros((), jnp.int32), key)


def guarded_update(loss_of_flat, optimizer, flat, opt_state, x, y):
    """One step on the flat params `[P]`; an update whose loss or gradient is not finite is not
    applied. Returns `(flat [P], opt_state, loss [])`.

    The reported loss of such a step is NaN (even if only the gradient was bad), so the host
    sees every skipped step in the epoch's losses without a round trip per step. The update is
    a `lax.cond` branch where `backend_tuning.guard_as_branch()`, else computed, then selected.
    """
    loss, grads = jax.value_and_grad(loss_of_flat)(flat, x, y)
    finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(grads))

    def update(operands):
        flat, opt_state, grads = operands
        updates, new_opt_state = optimizer.update(grads, opt_state, flat)
        return optax.apply_updates(flat, updates), new_opt_state

    operands = (flat, opt_state, grads)
    if backend_tuning.guard_as_branch():
        new = jax.lax.cond(finite, update, lambda operands: operands[:2], operands)
    else:
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), update(operands), operands[:2])
    return (*new, jnp.where(finite, loss, jnp.nan))


# The built-in losses with closed-form gradients in `mdn_jax.fastgrad`: (log-scale head, loss).
_CLOSED_FORM = {}
# The backends whose step uses them. None so far: on CPU autodiff was as fast or faster (closed
# form 0.84-1.02x per structure and loss, 2-core Xeon; the custom_vjp stops XLA fusing the head
# into the likelihood). `train_throughput.py --contenders scan,scan-closed-form` measures it.
CLOSED_FORM_BACKENDS: frozenset[str] = frozenset()


def model_loss(
    config,
    loss: LossFn,
    params,
    x,
    y,
    *,
    key: jax.Array | None = None,
    closed_form: bool | None = None,
    dropout_rate: jax.Array | None = None,
) -> jax.Array:
    """The training loss `[]` of the model `config` with `params` on `x [B, in]`, `y [B, D]`.

    The forward pass is `mdn_jax.forward` (plain jnp on the params, the same values as
    `model.apply`); with `config.dropout > 0`, `key` keys this step's dropout masks. A rate of 0
    is decided here, at trace time: that step draws no random numbers at all; `dropout_rate`
    (a traced `[]`, e.g. a stacked member's own rate) replaces the config's. `closed_form`
    (None: as `CLOSED_FORM_BACKENDS` says for the default backend) differentiates the built-in
    losses through `mdn_jax.fastgrad` on the structure's `fast_head`; any other loss gets the
    mixture of `head_to_mixture` and autodiff.
    """
    if dropout_rate is None:
        dropout_rate = config.dropout if config.dropout > 0 else None
    entry = structures.named(config.structure)
    options = mdl.mixture_options(config)
    del options["structure"]
    if closed_form is None:
        closed_form = jax.default_backend() in CLOSED_FORM_BACKENDS
    forward_pass = functools.partial(
        forward.raw_outputs, config, params, x, dropout_rate=dropout_rate, key=key
    )
    if closed_form and loss in _CLOSED_FORM:
        return _CLOSED_FORM[loss](entry.fast_head(forward_pass(), **options), y)
    if _transposed(entry, loss, x, y, config):
        return -jnp.mean(entry.transposed_log_prob(forward_pass(transposed=True), y, **options))
    return loss(entry.head_to_mixture(forward_pass(), **options), y)


def _transposed(entry, loss: LossFn, x, y, config) -> bool:
    """Whether `model_loss` takes `Structure.transposed_log_prob`: the built-in nll, a structure
    that has it, a plain batch `x [B, in]`, `y [B, D]` (else the mixture path and its checks)."""
    return (
        loss is nll_loss
        and entry.transposed_log_prob is not None
        and jnp.ndim(x) == 2
        and jnp.shape(y) == (jnp.shape(x)[0], config.out_features)
    )


def _flat_loss(config, loss: LossFn, unravel, dropout_rate=None, *, placement=None):
    """`loss(flat [P], x [B, in], y [B, D], key) -> []` of the model whose params unravel from
    `flat`. On one device, a built-in loss (a batch mean) of a model without dropout is the
    mean of `backend_tuning.batch_chains(B)` equal parts of the batch: independent forward and
    backward passes XLA runs side by side (the same value, summed in another order)."""

    one_device = placement is not None and placement.devices == 1
    split = one_device and config.dropout == 0 and loss in _CLOSED_FORM  # built-in losses

    def loss_of_flat(flat, x, y, key):
        params = unravel(flat)
        chains = backend_tuning.batch_chains(x.shape[0]) if split else 1
        if chains == 1:
            return model_loss(config, loss, params, x, y, key=key, dropout_rate=dropout_rate)
        parts = zip(jnp.split(x, chains), jnp.split(y, chains))
        return sum(model_loss(config, loss, params, a, b) for a, b in parts) / chains

    return loss_of_flat


def _dropout_key(config, key: jax.Array, step) -> jax.Array | None:
    """Step `step`'s dropout key from the state's key, or None when the model has no dropout
    (decided at trace time: a rate of 0 derives no key)."""
    return forward.step_key(key, step) if config.dropout > 0 else None


def train_step(
    graphdef,
    optimizer: optax.GradientTransformation,
    loss: LossFn,
    placement: parallel.Placement,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
) -> tuple[TrainState, jax.Array]:
    """One guarded step on the batch `x [B, in]`, `y [B, D]`; returns `(state, loss [])`."""
    flat, unravel = ravel_pytree(state.params)
    x, y = placement.pin_batch(x), placement.pin_batch(y)
    config = mdl.config_of(graphdef, state.params)  # at trace time: the graphdef's config
    loss_of_flat = _flat_loss(config, loss, unravel, placement=placement)
    key = _dropout_key(config, state.key, state.step)
    flat, opt_state, loss_value = guarded_update(
        lambda flat, x, y: loss_of_flat(flat, x, y, key), optimizer, flat, state.opt_state, x, y
    )
    flat, opt_state, loss_value = placement.pin_replicated((flat, opt_state, loss_value))
    return TrainState(unravel(flat), opt_state, state.step + 1, state.key), loss_value


def train_epoch(
    graphdef,
    optimizer: optax.GradientTransformation,
    loss: LossFn,
    placement: parallel.Placement,
    state: TrainState,
    xs: jax.Array,
    ys: jax.Array,
    batch_indices: jax.Array,
    *,
    dropout_rate: jax.Array | None = None,
) -> tuple[TrainState, jax.Array]:
    """One `lax.scan` of `train_step` over every batch; returns `(state, losses [num_batches])`.

    `dropout_rate` (a traced `[]`; only where the graphdef's config has dropout) replaces the
    config's rate: a stacked fit passes each member's own.

    `xs [N, in]`, `ys [N, D]` stay on the device; each iteration gathers its batch with one row
    of `batch_indices [num_batches, B]` (`[num_batches, P, B / P]` with P processes, each into
    its own share: see `Placement.take`). Nothing returns to the host until the scan ends.
    `Trainer.epoch` runs the same three parts as three programs (see there).
    """
    carry = (ravel_pytree(state.params)[0], state.opt_state)  # unpadded: see `flat_epoch`
    run = (graphdef, optimizer, loss, placement, state, carry, xs, ys, batch_indices)
    flat, opt_state, losses = flat_epoch(*run, dropout_rate=dropout_rate)
    return finished_epoch(placement, state, flat, opt_state, losses)


def padded_flat(placement: parallel.Placement, state: TrainState):
    """`(flat [P'], opt_state)`: the params raveled and, with their optimiser state,
    zero-padded by `pad_flat`: what the scanned epoch carries."""
    flat, _ = ravel_pytree(state.params)
    return placement.pin_replicated(pad_flat((flat, state.opt_state), flat.shape[0]))


def flat_epoch(
    graphdef,
    optimizer: optax.GradientTransformation,
    loss: LossFn,
    placement: parallel.Placement,
    state: TrainState,
    carry,
    xs: jax.Array,
    ys: jax.Array,
    batch_indices: jax.Array,
    *,
    dropout_rate: jax.Array | None = None,
):
    """The scan of `train_epoch` on `carry = padded_flat(placement, state)` (of `state`, only
    the params' layout, the step and the key are read): returns the carry after the epoch,
    `(flat [P'], opt_state)`, and `losses [num_batches]`. The carry may also be unpadded,
    `(flat [P], opt_state)`: `train_epoch` passes that, since a stacked fit's per-member
    optimisers hold `[P]` masks."""
    member = (optimizer, loss, state, carry, batch_indices, dropout_rate)
    return flat_epochs(graphdef, placement, [member], xs, ys)[0]


def flat_epochs(graphdef, placement: parallel.Placement, members, xs, ys):
    """Several models' epochs in ONE scan, each iteration one step of each: `members` lists
    `(optimizer, loss, state, carry, batch_indices, dropout_rate)` as `flat_epoch` takes them
    (the same number of batches each). Their steps are independent chains that XLA:CPU runs
    side by side on two cores (a stacked fit groups its members: `mdn_jax.stacked_in_turn`).
    Returns `[(flat, opt_state, losses [num_batches])]`, one per member."""
    setups, inputs = [], []
    for optimizer, loss, state, _, batch_indices, rate in members:
        _, unravel = ravel_pytree(state.params)  # the layout; the values come from the carry
        config = mdl.config_of(graphdef, state.params)  # at trace time: the graphdef's config
        rate = rate if config.dropout > 0 else None
        loss_of_flat = _flat_loss(config, loss, unravel, rate, placement=placement)
        setups.append((config, optimizer, loss_of_flat, flat_size(state.params), state.key))
        steps = None  # each iteration's step number, only for dropout's keys
        if config.dropout > 0:
            steps = state.step + jnp.arange(batch_indices.shape[0], dtype=state.step.dtype)
        inputs.append((batch_indices, steps))

    def body(carries, inputs):  # indices: [B], or [P, B / P] with several processes
        new, losses = [], []
        for setup, (flat, opt_state), (indices, step) in zip(setups, carries, inputs):
            config, optimizer, loss_of_flat, size, key = setup
            step_key = _dropout_key(config, key, step)
            x, y = placement.take(xs, indices), placement.take(ys, indices)
            of_flat = lambda f, x, y: loss_of_flat(f[:size], x, y, step_key)  # noqa: B023, E731
            flat, opt_state, loss_value = guarded_update(of_flat, optimizer, flat, opt_state, x, y)
            new.append((flat, opt_state))
            losses.append(loss_value)
        return new, losses

    carries = [tuple(member[3]) for member in members]
    carries, losses = jax.lax.scan(body, carries, inputs, unroll=scan_unroll())
    return [
        placement.pin_replicated((flat, opt_state, member_losses))
        for (flat, opt_state), member_losses in zip(carries, losses)
    ]


def finished_epoch(placement, state: TrainState, flat, opt_state, losses):
    """`(state, losses)` after an epoch: `flat_epoch`'s carry unpadded and unraveled, the step
    count advanced by the number of batches."""
    _, unravel = ravel_pytree(state.params)
    flat, opt_state = unpad_flat((flat, opt_state), flat_size(state.params))
    flat, opt_state = placement.pin_replicated((flat, opt_state))
    step = state.step + losses.shape[0]
    return TrainState(unravel(flat), opt_state, step, state.key), losses


# The training loss for loss="nll": the mean negative log-likelihood in nats per sample.
nll_loss: LossFn = mx.nll
_CLOSED_FORM.update({nll_loss: fastgrad.nll, discretised_nll_loss: fastgrad.discretised_nll})


def loss_named(name: str) -> LossFn:
    """The loss function for `TrainConfig.loss`."""
    if name == "discretised":
        return discretised_nll_loss
    return nll_loss


def __getattr__(name: str):
    """`mdn_jax.step.Trainer` (now in `mdn_jax.trainer`, which imports this module)."""
    if name == "Trainer":
        from mdn_jax.trainer import Trainer

        return Trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
