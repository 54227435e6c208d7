"""Many models in one compiled call: `fit_stacked` trains M members side by side.

Every leaf of the state has a leading model axis `[M]`; one jitted epoch maps
`mdn_jax.step.train_epoch` (the same guarded `lax.scan` a single model runs) over that axis, so
the members' steps run as one program: `jax.vmap` (batched) on accelerators; on CPU, where that
is slower (`members_in_turn`), groups of members each run as one scan of independent steps
(`mdn_jax.stacked_in_turn`), one call of one compiled program per group. Each epoch's shuffles
are drawn on the host while the previous epoch runs. Each member has its own initialisation
seed and shuffle (its `TrainConfig.seed`, split exactly as `mdn_jax.train.fit` splits it), its
own learning rate and scale floor, and its own widths at the same depth (see
`mdn_jax.stacked_members` for padding and masking). Member m of a stacked fit equals `train.fit`
with member m's configs, up to float rounding (tests/test_stacked.py).

Non-finite steps: the guard works per member (each member's `where` reads only its own loss and
gradient), so one member's bad step is not applied while the others' are. The host policy then
follows `on_nonfinite`: 'stop' raises NonFiniteError naming the member, 'skip' counts each
member's skipped steps in the record (`skipped_steps`, one count per member).

Several devices: data parallel as `fit` (`mdn_jax.parallel.Placement`): the model axis is
replicated (every device holds every member's params and optimiser state), each member's batch
is sharded over the devices along the batch axis, and XLA inserts the gradient all-reduce. One
process only: several processes train single models (`train.fit`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mdn_jax import backend_tuning, parallel, stacked_loop, step
from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax import stacked_members as sm
from mdn_jax import train as tr
from mdn_jax.config import TrainConfig
from mdn_jax.stacked_in_turn import InTurnEpochs, member_training
from mdn_jax.stacked_loop import stacked_record as stacked_record

# Per backend: on CPU the members run in turn, in groups (`mdn_jax.stacked_in_turn`; first
# measured as a `lax.map` over the model axis); elsewhere they run side by side (`vmap`), which
# batches their matmuls.
# Measured on the 2-core CPU (reference trunk, joint K=10, process CPU time per epoch against M
# separate `Trainer.epoch` calls, same shuffles): at batch 4096 vmap ran 0.89-0.92x for M=4-8
# (XLA's CPU batched dot_general is slower than M plain dots), lax.map 1.02-1.03x; at batch 200
# both were 1.00-1.04x. A GPU is the other way round: batching M members fills the device.
IN_TURN_BACKENDS = ("cpu",)


def members_in_turn(backend: str | None = None) -> bool:
    """Whether the stacked epoch runs its members in turn (`InTurnEpochs`) rather than
    batched (`vmap`) on `backend` (default: JAX's default backend); see `IN_TURN_BACKENDS`."""
    return (backend or jax.default_backend()) in IN_TURN_BACKENDS


def stacked_epoch(
    graphdef, base, loss, placement, wide, shared, states, settings, xs, ys, batch_indices
):
    """One epoch of every member, batched: `step.train_epoch` vmapped over the leading `[M]` of
    `states`, `settings` (`sm.Settings`) and `batch_indices [M, num_batches, B]`; `xs [N, in]`,
    `ys [N, D]` are shared. `shared` (`sm.Shared`, static) leaves out what all members share.
    Returns `(states, losses [M, num_batches])`. Members in turn (CPU): `InTurnEpochs`."""

    def one(args):
        state, member, indices = args
        optimizer, member_loss, rate = member_training(base, loss, wide, shared, member)
        return step.train_epoch(
            graphdef, optimizer, member_loss, placement, state, xs, ys, indices, dropout_rate=rate
        )

    return jax.vmap(one)((states, settings, batch_indices))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict(graphdef, wide, params, shifts, x):
    def one(member_params, shift):
        return sm.shift_floor(mdl.apply(graphdef, member_params, x), shift, config=wide)

    return jax.vmap(one)(params, shifts)


@dataclasses.dataclass(frozen=True)
class StackedFit:
    """The result of `fit_stacked`: M members as one padded, stacked model.

    graphdef: the padded (widest) model's graphdef; `params` and every leaf of `state` have a
    leading `[M]` axis. `history`: one record per epoch with `member_losses` `[M]` beside what a
    `fit` record holds ("loss" is their mean; "samples_per_second" counts every member's).
    """

    graphdef: Any
    state: step.TrainState
    history: list[dict]
    model_configs: tuple[mdl.ModelConfig, ...]
    train_configs: tuple[TrainConfig, ...]
    wide: mdl.ModelConfig  # the padded model: widest hidden widths, member 0's scale floor

    @property
    def params(self):
        return self.state.params

    @property
    def size(self) -> int:
        return len(self.model_configs)

    def floor_shifts(self) -> jax.Array:
        """`[M]` each member's scale floor minus the padded model's."""
        floors = [c.scale_floor - self.wide.scale_floor for c in self.model_configs]
        return jnp.asarray(floors, jnp.float32)

    def predict(self, x) -> mx.Mixture:
        """Every member's mixture for `x [..., in]`, stacked: batch shape `[M, ...]`."""
        params = parallel.local(self.params)
        return _predict(self.graphdef, self.wide, params, self.floor_shifts(), jnp.asarray(x))

    def member(self, m: int) -> tr.FitResult:
        """Member m alone, at its own widths: graphdef, params, optimiser state (resumable with
        `train.fit(state=...)`), config and its own history."""
        if not 0 <= m < self.size:
            raise ValueError(f"member {m} does not exist: this fit has members 0..{self.size - 1}")
        config = self.model_configs[m]
        graphdef, own = sm.shapes_of(config)
        _, wide_shapes = sm.shapes_of(self.wide)
        state = jax.tree.map(lambda leaf: leaf[m], parallel.local(self.state))
        flat_size = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(wide_shapes))
        opt_state = sm.unpad_flat(state.opt_state[1], wide_shapes, own, flat_size=flat_size)
        own_state = step.TrainState(sm.unpad(state.params, own), opt_state, state.step, state.key)
        history = [member_record(record, m) for record in self.history]
        return tr.FitResult(graphdef, own_state, config, history)


def member_record(record: dict, m: int) -> dict:
    """Member m's view of a stacked history record (its loss and skipped steps)."""
    own = {k: v for k, v in record.items() if k not in ("member_losses", "skipped_steps")}
    if "member_losses" in record:
        own["loss"] = record["member_losses"][m]
    skipped = record.get("skipped_steps")
    if skipped and skipped[m]:
        own["skipped_steps"] = skipped[m]
    return own


def _train_configs(train_configs, count: int) -> tuple[TrainConfig, ...]:
    if train_configs is None:
        return (TrainConfig(),) * count
    if isinstance(train_configs, TrainConfig):
        return (train_configs,) * count
    return tuple(train_configs)


def _members(xs, ys, model_configs, train_configs, normalise_inputs, placement):
    """The checked arrays and member configs (inputs normalised from the data when asked)."""
    model_configs = tuple(model_configs)
    train_configs = _train_configs(train_configs, len(model_configs))
    sm.check_members(model_configs, train_configs)
    xs, ys, _ = tr._checked(xs, ys, model_configs[0])
    config = model_configs[0]
    if normalise_inputs and config.input_offset is None and config.input_scale is None:
        offset, scale = placement.normalisation(xs)
        model_configs = tuple(
            dataclasses.replace(c, input_offset=offset, input_scale=scale) for c in model_configs
        )
    return xs, ys, model_configs, train_configs


@functools.lru_cache(maxsize=8)
def _compiled(
    graphdef, base_config: TrainConfig, total_steps: int, loss, placement, wide, shared, in_turn
):
    """The `_Epochs` of these settings, kept, so that fitting the same stack again in this
    process (a resume, a sweep of seeds) reuses the compiled epoch."""
    base = step.make_optimizer(base_config, total_steps=total_steps)
    return _Epochs(graphdef, base, loss, placement, wide, shared, in_turn)


def _epochs_for(graphdef, first: TrainConfig, num_samples: int, loss, placement, wide, shared):
    """The compiled epochs for members whose first train config is `first`."""
    total_steps = first.epochs * step.steps_per_epoch(num_samples, first.batch_size)
    base_config = sm.base_train_config(first, shared=shared)
    mesh = placement.mesh
    platform = parallel.describe_platform() if mesh is None else mesh.devices.flat[0].platform
    loss = loss or step.loss_named(first.loss)
    in_turn = members_in_turn(platform)
    return _compiled(graphdef, base_config, total_steps, loss, placement, wide, shared, in_turn)


class _Epochs:
    """The jitted stacked epoch for one padded model and shared optimiser, on a placement."""

    def __init__(self, graphdef, base, loss, placement: parallel.Placement, wide, shared, in_turn):
        self.base = base
        self.placement = placement
        if in_turn:  # groups of members, each group one scan carrying its members as arguments
            self.run = InTurnEpochs(graphdef, base, loss, placement, wide, shared)
            return
        bound = functools.partial(stacked_epoch, graphdef, base, loss, placement, wide, shared)
        options = backend_tuning.compiler_options()  # per-backend, as `Trainer`'s
        self.run = jax.jit(bound, donate_argnums=0, compiler_options=options)

    def batch_indices(self, batches: np.ndarray):
        """`[M, num_batches, B]` indices, each batch sharded over the devices like `fit`'s."""
        mesh = self.placement.mesh
        if mesh is None:
            return batches
        spec = PartitionSpec(None, None, parallel.AXES)
        return jax.device_put(batches, NamedSharding(mesh, spec))


def fit_stacked(
    xs,
    ys,
    *,
    model_configs: Sequence[mdl.ModelConfig],
    train_configs: Sequence[TrainConfig] | TrainConfig | None = None,
    callbacks: Sequence[tr.Callback] = (),
    normalise_inputs: bool = True,
    state: step.TrainState | None = None,
    start_epoch: int = 0,
    loss: step.LossFn | None = None,
    devices: int | None = None,
) -> StackedFit:
    """Train M = len(model_configs) MDNs on `xs [N, in]`, `ys [N, D]` in one compiled epoch.

    `train_configs`: one per member, or one for all. Members may differ in hidden widths (same
    depth), scale floor, initial means, seed and learning rate (`stacked_members`); anything
    else raises ValueError naming the setting. Inputs are normalised as `fit` does, and
    `state`/`start_epoch` resume a stacked state (`StackedFit.state`, or a checkpoint's).
    Callbacks receive `train.EpochReport`s whose state is the stacked one, with the padded
    graphdef and config. `devices`: data parallel as `fit` (model axis replicated, see module).
    """
    train_configs = _train_configs(train_configs, len(tuple(model_configs)))
    first = train_configs[0] if train_configs else TrainConfig()
    placement = parallel.Placement.build(devices, batch_size=first.batch_size)
    if placement.processes > 1:
        raise ValueError(
            "stacked training runs in one process; train each member with fit under "
            "jax.distributed, or run fit_stacked without it"
        )
    xs, ys, model_configs, train_configs = _members(
        xs, ys, model_configs, train_configs, normalise_inputs, placement
    )
    tr.check_batch_size(first.batch_size, xs.shape[0])
    wide = sm.wide_config(model_configs)
    shared = sm.shared(model_configs, train_configs, wide)
    graphdef, _ = sm.shapes_of(wide)
    epochs = _epochs_for(graphdef, first, xs.shape[0], loss, placement, wide, shared)
    fresh, settings = sm.initial(model_configs, train_configs, wide, epochs.base, shared=shared)
    state = placement.put_state(fresh if state is None else state)
    settings = placement.put_state(settings)
    xs_device, ys_device = (placement.put_data(a, max_rows=xs.shape[0]) for a in (xs, ys))
    state, history = stacked_loop.epoch_loop(
        epochs,
        state,
        settings,
        xs_device,
        ys_device,
        ys,
        first,
        start_epoch,
        callbacks,
        graphdef,
        wide,
    )
    return StackedFit(graphdef, state, history, model_configs, train_configs, wide)
