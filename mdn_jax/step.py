"""The compiled part of training: one guarded optimiser step, and one epoch as a `lax.scan` of it.

The hot path is `model_loss`: the pure forward of `mdn_jax.forward` (no NNX graph per step),
the structure's head transform and the loss, autodiffed (closed forms: `CLOSED_FORM_BACKENDS`);
the epoch's scan is unrolled per backend (`scan_unroll`). Dropout, when the model has it, is
keyed by the state's key and the step number, so a resumed run draws the same masks.

Pure functions of `(graphdef, optimizer, loss, placement)` and the arrays; `Trainer` (below)
binds the first four and jits them, `mdn_jax.train.fit` runs the host loop around them.

Inside both, params and the optimiser state are kept as one flat float vector
(`jax.flatten_util.ravel_pytree`): Adam then updates a single array instead of one per layer,
which measurably shortens a small-batch step on CPU. The state's `params` is always the ordinary
params pytree; its `opt_state` is the optimiser state of the flat vector.

Where the arrays live is `placement`'s business (`mdn_jax.parallel.Placement`): on one device its
hooks are the identity and the program carries no sharding annotation at all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from mdn_jax import backend_tuning, fastgrad, forward, parallel, structures
from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax.discretised import discretised_nll_loss

if TYPE_CHECKING:
    from mdn_jax.config import TrainConfig

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
    sees every skipped step in the epoch's losses without a round trip per step.
    """
    loss, grads = jax.value_and_grad(loss_of_flat)(flat, x, y)
    updates, new_opt_state = optimizer.update(grads, opt_state, flat)
    finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(grads))
    new_flat = jnp.where(finite, optax.apply_updates(flat, updates), flat)
    new_opt_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old), new_opt_state, opt_state
    )
    return new_flat, new_opt_state, jnp.where(finite, loss, jnp.nan)


# The built-in losses with closed-form gradients in `mdn_jax.fastgrad`: (log-scale head, loss).
_CLOSED_FORM = {}
# The backends whose step uses them. None so far: on CPU (2-core Xeon, reference workload, a
# scanned epoch of the same step, alternating, medians) autodiff of the mixture code was as fast
# or faster; closed form over autodiff: joint 0.84x, per_dim 0.90x, full 0.97x (nll) and joint
# 0.96x, per_dim 1.02x (discretised) at batch 200, joint 0.96x at batch 4096. The custom_vjp
# boundary stops XLA fusing the head's transforms into the likelihood, and its residuals are
# materialised. `python benchmarks/train_throughput.py --contenders scan,scan-closed-form`
# measures it; add a backend here once a measurement there says otherwise.
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
    raw = forward.raw_outputs(config, params, x, dropout_rate=dropout_rate, key=key)
    entry = structures.named(config.structure)
    options = mdl.mixture_options(config)
    del options["structure"]
    if closed_form is None:
        closed_form = jax.default_backend() in CLOSED_FORM_BACKENDS
    if closed_form and loss in _CLOSED_FORM:
        return _CLOSED_FORM[loss](entry.fast_head(raw, **options), y)
    return loss(entry.head_to_mixture(raw, **options), y)


def _flat_loss(config, loss: LossFn, unravel, dropout_rate=None):
    """`loss(flat [P], x [B, in], y [B, D], key) -> []` of the model whose params unravel from
    `flat`."""
    return lambda flat, x, y, key: model_loss(
        config, loss, unravel(flat), x, y, key=key, dropout_rate=dropout_rate
    )


def _dropout_key(config, key: jax.Array, step) -> jax.Array | None:
    """Step `step`'s dropout key from the state's key, or None when the model has no dropout
    (decided at trace time: a rate of 0 derives no key)."""
    return forward.step_key(key, step) if config.dropout > 0 else None


def scan_unroll() -> int:
    """Scan iterations per loop trip on the default backend.

    CPU: 4 measured fastest at batch 200 (+8% over 1; 8 was slower than 4). GPU and others: 4
    as well, since XLA runs the scan's loop control on the host there (several microseconds
    per trip) and a batch-200 step is only a few hundred microseconds of kernels; more than 4
    mostly lengthens compilation.
    """
    return _UNROLL.get(jax.default_backend(), 4)


_UNROLL = {"cpu": 4, "gpu": 4}


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
    loss_of_flat = _flat_loss(config, loss, unravel)
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
    """
    flat, unravel = ravel_pytree(state.params)
    config = mdl.config_of(graphdef, state.params)  # at trace time: the graphdef's config
    loss_of_flat = _flat_loss(config, loss, unravel, dropout_rate if config.dropout > 0 else None)
    steps = None  # each iteration's step number, only for dropout's keys
    if config.dropout > 0:
        steps = state.step + jnp.arange(batch_indices.shape[0], dtype=state.step.dtype)

    def body(carry, inputs):  # indices: [B], or [P, B / P] with several processes
        flat, opt_state = carry
        indices, step = inputs
        key = _dropout_key(config, state.key, step)
        x, y = placement.take(xs, indices), placement.take(ys, indices)
        flat, opt_state, loss_value = guarded_update(
            lambda flat, x, y: loss_of_flat(flat, x, y, key), optimizer, flat, opt_state, x, y
        )
        return (flat, opt_state), loss_value

    (flat, opt_state), losses = jax.lax.scan(
        body, (flat, state.opt_state), (batch_indices, steps), unroll=scan_unroll()
    )
    flat, opt_state, losses = placement.pin_replicated((flat, opt_state, losses))
    step = state.step + batch_indices.shape[0]
    return TrainState(unravel(flat), opt_state, step, state.key), losses


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    return -(-num_samples // batch_size)


def shuffled_batches(
    key: jax.Array, num_samples: int, batch_size: int, *, num_batches: int | None = None
) -> np.ndarray:
    """A fresh shuffle of `range(num_samples)` as `[ceil(N / B), B]` int32 batch indices.

    The permutation is drawn on the host with numpy, seeded from `key`'s bits: it is
    deterministic in the key and costs ~1 ms where `jax.random.permutation` of 82k indices
    costs ~46 ms on a 2-core CPU. The last partial batch wraps around (see module docstring);
    `num_batches` asks for more batches than that (the order repeats), for a process whose
    share of the data is shorter than another's.
    """
    seed = np.asarray(jax.random.key_data(key)).astype(np.uint32).ravel()
    order = np.random.default_rng(seed).permutation(num_samples)
    num_batches = num_batches or steps_per_epoch(num_samples, batch_size)
    padded = np.resize(order, num_batches * batch_size)  # np.resize repeats from the start
    return padded.reshape(num_batches, batch_size).astype(np.int32)


def make_optimizer(config: TrainConfig, *, total_steps: int) -> optax.GradientTransformation:
    """Adam with the configured schedule and optional global-norm clipping."""
    if config.schedule == "constant":
        learning_rate = config.learning_rate
    elif config.schedule == "cosine":
        learning_rate = optax.cosine_decay_schedule(config.learning_rate, max(total_steps, 1))
    else:
        warmup = max(1, total_steps // 20)
        learning_rate = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, warmup, max(total_steps, warmup + 1)
        )
    adam = optax.adam(learning_rate, b2=config.adam_b2, eps=config.adam_eps)
    if config.clip_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)


# The training loss for loss="nll": the mean negative log-likelihood in nats per sample.
nll_loss: LossFn = mx.nll
_CLOSED_FORM.update({nll_loss: fastgrad.nll, discretised_nll_loss: fastgrad.discretised_nll})


def loss_named(name: str) -> LossFn:
    """The loss function for `TrainConfig.loss`."""
    if name == "discretised":
        return discretised_nll_loss
    return nll_loss


class Trainer:
    """The compiled step and epoch (`mdn_jax.step`) jitted for one model and one optimiser;
    holds no mutable state.

    With a `mesh` (see `mdn_jax.parallel`) the state is replicated on every device and each
    batch is sharded over them: XLA partitions the same step and inserts the gradient
    all-reduce. Without one (a single device) no sharding annotation is emitted at all.
    """

    def __init__(
        self,
        graphdef,
        optimizer: optax.GradientTransformation,
        *,
        loss: LossFn = nll_loss,
        mesh: jax.sharding.Mesh | None = None,
    ):
        self.graphdef = graphdef
        self.optimizer = optimizer
        self.loss = loss
        self.mesh = mesh
        self.placement = parallel.Placement(mesh)
        bound = (graphdef, optimizer, loss, self.placement)
        # `step(state, x, y)` and `epoch(state, xs, ys, batch_indices)`; both donate the state.
        # compiled with `backend_tuning`'s per-backend compiler options
        options = backend_tuning.compiler_options()
        self.step = jax.jit(
            functools.partial(train_step, *bound), donate_argnums=0, compiler_options=options
        )
        self.epoch = jax.jit(
            functools.partial(train_epoch, *bound), donate_argnums=0, compiler_options=options
        )

    def init(self, params, *, key: jax.Array) -> TrainState:
        """A fresh state (replicated over the mesh, if any); `params` is copied, so donating the
        state never deletes the caller's."""
        return self.placement.put_state(init_state(params, self.optimizer, key=key))
