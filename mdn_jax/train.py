"""Optax training: one compiled `jax.lax.scan` per epoch over device-resident data.

The pieces, from the inside out:

- `Trainer.step(state, x, y) -> (state, loss)`: one jitted optimiser step on one batch.
- `Trainer.epoch(state, xs, ys, batch_indices) -> (state, losses)`: one jitted `lax.scan` of
  the same step over every batch of an epoch; `xs [N, in]`, `ys [N, D]` stay on the device,
  each scan iteration gathers its batch with `batch_indices [num_batches, batch_size]`, the
  state is donated, nothing returns to Python until the epoch ends.
- `fit(xs, ys, ...)`: builds the model, shuffles on the host and calls `epoch` once per epoch,
  running callbacks after each.

Inside both `step` and `epoch`, params and the optimiser state are kept as one flat float
vector (`jax.flatten_util.ravel_pytree`): Adam then updates a single array instead of one per
layer, which measurably shortens a small-batch step on CPU. `TrainState.params` is always the
ordinary params pytree; `TrainState.opt_state` is the optimiser state of the flat vector.

Several devices: `fit` trains data parallel over a device mesh (see `mdn_jax.parallel`): the
batch axis is sharded, params and optimiser state are replicated, the scanned epoch is the same
and XLA inserts the gradient all-reduce. With one device no mesh is used and the epoch is
exactly the single-device program.

Last partial batch: when N is not a multiple of the batch size, the shuffled order is padded by
wrapping around to its start, so every sample is seen at least once per epoch, every batch has
the same shape (one compiled step) and `ceil(N / batch_size)` steps run per epoch; the few
samples that wrap around are seen twice in that epoch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from mdn_jax import guards, parallel
from mdn_jax import mixture as mx
from mdn_jax import model as mdl

SCHEDULES = ("constant", "cosine", "warmup_cosine")
LOSSES = ("nll", "discretised")
ON_NONFINITE = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or gradient and was told to stop (one-line message)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings; JSON-serialisable via `to_dict`/`from_dict`.

    Attributes:
      epochs: passes over the data.
      batch_size: samples per step.
      learning_rate: Adam's peak learning rate.
      schedule: 'constant', 'cosine' (decay to 0 over all steps) or 'warmup_cosine'
        (5% linear warm-up, then cosine decay).
      clip_norm: clip gradients to this global norm; None for no clipping.
      seed: seeds initialisation and the shuffle.
      loss: 'nll' (continuous negative log-likelihood) or 'discretised' (the mass of each
        target's 8-bit bin, for colours in [0, 1]; see mdn_jax.discretised).
      on_nonfinite: a step whose loss or gradient is not finite is never applied; 'stop'
        (default) then raises NonFiniteError after that epoch, naming the epoch and step;
        'skip' carries on and counts the skipped steps in the history ('skipped_steps').
    """

    epochs: int = 100
    batch_size: int = 200
    learning_rate: float = 1e-3
    schedule: str = "constant"
    clip_norm: float | None = None
    seed: int = 0
    loss: str = "nll"
    on_nonfinite: str = "stop"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or value < (0 if name == "seed" else 1)
            ):
                raise ValueError(
                    f"{name} must be a {'non-negative' if name == 'seed' else 'positive'} "
                    f"integer, got {value!r}"
                )
        if not (
            isinstance(self.learning_rate, (int, float))
            and math.isfinite(self.learning_rate)
            and self.learning_rate > 0
        ):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.clip_norm is not None and not (
            math.isfinite(self.clip_norm) and self.clip_norm > 0
        ):
            raise ValueError(f"clip_norm must be a positive number or None, got {self.clip_norm!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"train config has unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**values)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    return -(-num_samples // batch_size)


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
    adam = optax.adam(learning_rate)
    if config.clip_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree.

    params: the model's params pytree. opt_state: optimiser state of the flattened params.
    step: number of optimiser steps taken (int32 scalar). key: PRNG key for the shuffle.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


LossFn = Callable[[mx.Mixture, jax.Array], jax.Array]


def nll_loss(mixture: mx.Mixture, y: jax.Array) -> jax.Array:
    """Mean negative log-likelihood in nats per sample."""
    return mx.nll(mixture, y)


def loss_named(name: str) -> LossFn:
    """The loss function for `TrainConfig.loss`."""
    if name == "discretised":
        from mdn_jax.discretised import discretised_nll_loss

        return discretised_nll_loss
    return nll_loss


class Trainer:
    """Jitted training functions for one model and one optimiser; holds no mutable state.

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
        self.step = jax.jit(self._step, donate_argnums=0)
        self.epoch = jax.jit(self._epoch, donate_argnums=0)
        self.evaluate = jax.jit(self._evaluate)

    def init(self, params, *, key: jax.Array) -> TrainState:
        """A fresh state (replicated over the mesh, if any); `params` is copied, so donating the
        state never deletes the caller's."""
        params = jax.tree_util.tree_map(jnp.copy, params)
        flat, _ = ravel_pytree(params)
        state = TrainState(params, self.optimizer.init(flat), jnp.zeros((), jnp.int32), key)
        return state if self.mesh is None else parallel.replicate(state, self.mesh)

    def _batch(self, data: jax.Array, indices: jax.Array) -> jax.Array:
        """The rows of one batch, `[B, F]`, sharded over the mesh's devices when there is one.

        One process: `data [N, F]`, `indices [B]`. P processes: each process's share
        `data [P, N_max, F]` and `indices [P, B / P]` into it, so every device gathers from the
        share it holds (no data crosses devices); the result is the processes' rows in order.
        """
        if indices.ndim == 1:
            batch = data[indices]
        else:
            batch = jax.vmap(lambda share, rows: share[rows])(data, indices).reshape(
                (-1,) + data.shape[2:]
            )
        if self.mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, parallel.batch_sharding(self.mesh))

    def _replicated(self, tree):
        """Pin outputs to every device, so the next epoch's (donated) inputs match them."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, parallel.replicated(self.mesh))

    def loss_of_params(self, params, x: jax.Array, y: jax.Array) -> jax.Array:
        """Loss of `params` on one batch `x [B, in]`, `y [B, D]`."""
        return self.loss(mdl.apply(self.graphdef, params, x), y)

    def _flat_update(self, unravel, flat, opt_state, x, y):
        """One guarded step: an update whose loss or gradient is not finite is not applied.

        The reported loss of such a step is NaN (even if only the gradient was bad), so the host
        sees every skipped step in the epoch's losses without a round trip per step.
        """
        loss, grads = jax.value_and_grad(lambda f: self.loss_of_params(unravel(f), x, y))(flat)
        updates, new_opt_state = self.optimizer.update(grads, opt_state, flat)
        finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(grads))
        new_flat = jnp.where(finite, optax.apply_updates(flat, updates), flat)
        new_opt_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old), new_opt_state, opt_state
        )
        return new_flat, new_opt_state, jnp.where(finite, loss, jnp.nan)

    def _step(self, state: TrainState, x: jax.Array, y: jax.Array):
        flat, unravel = ravel_pytree(state.params)
        if self.mesh is not None:
            x, y = (
                jax.lax.with_sharding_constraint(v, parallel.batch_sharding(self.mesh))
                for v in (x, y)
            )
        flat, opt_state, loss = self._flat_update(unravel, flat, state.opt_state, x, y)
        flat, opt_state, loss = self._replicated((flat, opt_state, loss))
        return TrainState(unravel(flat), opt_state, state.step + 1, state.key), loss

    def _epoch(self, state: TrainState, xs: jax.Array, ys: jax.Array, batch_indices: jax.Array):
        flat, unravel = ravel_pytree(state.params)

        def body(carry, indices):  # indices: [B], or [P, B / P] with several processes
            flat, opt_state = carry
            x, y = self._batch(xs, indices), self._batch(ys, indices)
            flat, opt_state, loss = self._flat_update(unravel, flat, opt_state, x, y)
            return (flat, opt_state), loss

        (flat, opt_state), losses = jax.lax.scan(body, (flat, state.opt_state), batch_indices)
        flat, opt_state, losses = self._replicated((flat, opt_state, losses))
        step = state.step + batch_indices.shape[0]
        return TrainState(unravel(flat), opt_state, step, state.key), losses

    def _evaluate(self, params, x: jax.Array, y: jax.Array) -> jax.Array:
        """Per-sample negative log-likelihood `[B]` in nats."""
        return -mx.log_prob(mdl.apply(self.graphdef, params, x), y)


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


@dataclasses.dataclass(frozen=True)
class EpochReport:
    """What a callback receives after each epoch.

    `state` is valid during the callback only: the next epoch donates (deletes) its buffers. To
    keep it, copy it: `jax.tree_util.tree_map(jnp.copy, report.state)`.
    """

    epoch: int  # 1-based number of the epoch just finished
    loss: float  # mean training loss over the epoch's batches
    seconds: float  # wall time of the epoch (the first includes compilation)
    samples_per_second: float
    state: TrainState
    graphdef: Any
    model_config: mdl.ModelConfig
    history_record: dict | None = None  # this epoch's entry of the history (e.g. skipped_steps)


Callback = Callable[[EpochReport], Any]


@dataclasses.dataclass
class FitResult:
    graphdef: Any
    state: TrainState
    model_config: mdl.ModelConfig
    history: list[dict[str, float]]

    @property
    def params(self):
        return self.state.params

    def predict(self, x) -> mx.Mixture:
        """The model's mixture for inputs `x [..., in]`."""
        params = parallel.local(
            self.params
        )  # on one device: replicated copies would repeat the work
        return jax.jit(mdl.apply, static_argnums=0)(self.graphdef, params, jnp.asarray(x))


def check_arrays(xs, ys) -> tuple[np.ndarray, np.ndarray]:
    """Validate training arrays at the boundary; return them as float32 numpy."""
    xs = np.asarray(xs, dtype=np.float32)
    ys = np.asarray(ys, dtype=np.float32)
    if xs.ndim == 1:
        xs = xs[:, None]
    if ys.ndim == 1:
        ys = ys[:, None]
    if xs.ndim != 2 or ys.ndim != 2:
        raise ValueError(
            f"xs and ys must be 2-D arrays [N, features], got shapes {xs.shape} and {ys.shape}"
        )
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(
            f"xs and ys must have the same number of rows, got {xs.shape[0]} and {ys.shape[0]}"
        )
    if xs.shape[0] == 0:
        raise ValueError("no training data: xs and ys have 0 rows")
    for name, array in (("xs", xs), ("ys", ys)):
        bad = ~np.isfinite(array)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(
                f"{name} has {int(bad.sum())} NaN or infinite values (first in row {row}); "
                "drop or fill those rows before training"
            )
    return xs, ys


def check_batch_size(batch_size: int, num_samples: int, *, unit: str = "training samples") -> None:
    """Refuse a batch larger than the data, naming the largest that fits."""
    if batch_size > num_samples:
        raise ValueError(
            f"batch size {batch_size} is larger than the {num_samples} {unit}; "
            f"use --batch-size {num_samples} or less"
        )


def fit(
    xs,
    ys,
    *,
    model_config: mdl.ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    normalise_inputs: bool = True,
    state: TrainState | None = None,
    start_epoch: int = 0,
    loss: LossFn | None = None,
    devices: int | None = None,
) -> FitResult:
    """Train an MDN on `xs [N, in]`, `ys [N, D]`.

    `model_config` defaults to the reference trunk with `in_features`/`out_features` taken from
    the data; its input normalisation, when unset and `normalise_inputs`, is set to the
    per-feature mean and std of `xs` and stored in the returned config. Pass `state` and
    `start_epoch` to resume. A callback returning True stops training after that epoch.
    `loss` overrides the loss named by `train_config.loss`.

    Devices: data parallel over `devices` devices (None: all of them; see `mdn_jax.parallel`).
    The batch size must be a multiple of the device count. On one host the shuffle is the same
    for any device count, so 1 and 4 devices train the same model up to float rounding. Under
    `jax.distributed.initialize()` every process calls `fit` with its own share of the data
    (e.g. `xs[parallel.process_share(N)]`) and the same configs; each epoch's batch is the
    processes' own shuffled rows side by side, `batch_size / processes` from each.
    """
    xs, ys = check_arrays(xs, ys)
    train_config = train_config or TrainConfig()
    if model_config is None:
        model_config = mdl.ModelConfig(in_features=xs.shape[1], out_features=ys.shape[1])
    if (model_config.in_features, model_config.out_features) != (xs.shape[1], ys.shape[1]):
        raise ValueError(
            f"model expects {model_config.in_features} inputs and {model_config.out_features} "
            f"outputs but the data has {xs.shape[1]} and {ys.shape[1]}"
        )
    mesh = parallel.data_mesh(devices)
    parallel.check_batch_size(train_config.batch_size, mesh.devices.size)
    processes = mesh.devices.shape[0]
    share_sizes = parallel.gather_from_processes(np.array([xs.shape[0]]), mesh)[:, 0]  # [P]
    check_batch_size(train_config.batch_size, int(share_sizes.sum()))
    if normalise_inputs and model_config.input_offset is None and model_config.input_scale is None:
        offset, scale = _normalisation(xs, mesh)
        model_config = dataclasses.replace(model_config, input_offset=offset, input_scale=scale)

    init_key, shuffle_key = jax.random.split(jax.random.key(train_config.seed))
    graphdef, params = mdl.init(model_config, key=init_key)
    process_batch = train_config.batch_size // processes
    batches_per_epoch = steps_per_epoch(int(share_sizes.max()), process_batch)
    total_steps = train_config.epochs * batches_per_epoch
    sharded = mesh.devices.size > 1  # one device: no mesh, the unannotated single-device program
    trainer = Trainer(
        graphdef,
        make_optimizer(train_config, total_steps=total_steps),
        loss=loss or loss_named(train_config.loss),
        mesh=mesh if sharded else None,
    )
    if state is None:
        state = trainer.init(params, key=shuffle_key)
    elif sharded:  # new replicated arrays: the caller's stay valid when epochs donate these
        state = parallel.replicate(state, mesh)
    else:  # epochs donate their input state: copy, so the caller's arrays stay valid
        state = jax.tree_util.tree_map(jnp.copy, state)
    if sharded:
        xs_device, ys_device = (
            parallel.put_training_data(a, mesh, max_rows=int(share_sizes.max())) for a in (xs, ys)
        )
    else:
        xs_device, ys_device = jax.device_put(xs), jax.device_put(ys)
    history: list[dict[str, float]] = []
    for epoch in range(start_epoch, train_config.epochs):
        start = time.perf_counter()
        key, epoch_key = jax.random.split(state.key)
        if processes == 1:
            batches = shuffled_batches(epoch_key, xs.shape[0], train_config.batch_size)
        else:  # each process shuffles its own share, all into the same number of batches
            process_key = jax.random.fold_in(parallel.local(epoch_key), jax.process_index())
            batches = shuffled_batches(
                process_key, xs.shape[0], process_batch, num_batches=batches_per_epoch
            )
        if sharded:
            batches = parallel.put_batch_indices(batches, mesh)
        state, losses = trainer.epoch(state._replace(key=key), xs_device, ys_device, batches)
        losses = np.asarray(losses)  # waits for the epoch to finish
        seconds = time.perf_counter() - start
        skipped = np.flatnonzero(~np.isfinite(losses))
        if skipped.size and train_config.on_nonfinite == "stop":
            raise NonFiniteError(
                f"non-finite loss or gradient in epoch {epoch + 1} at step {int(skipped[0]) + 1} of {len(losses)}; "
                + guards.nonfinite_fix(ys)
            )
        mean_loss = (
            float(np.mean(losses[np.isfinite(losses)]))
            if skipped.size < len(losses)
            else float("nan")
        )
        record = {
            "epoch": epoch + 1,
            "loss": mean_loss,
            "seconds": seconds,
            "samples_per_second": len(losses) * train_config.batch_size / seconds,
        }
        if skipped.size:
            record["skipped_steps"] = int(skipped.size)
        history.append(record)
        report = EpochReport(
            epoch + 1,
            mean_loss,
            seconds,
            record["samples_per_second"],
            state,
            graphdef,
            model_config,
            record,
        )
        if any([callback(report) is True for callback in callbacks]):
            break
    return FitResult(graphdef, state, model_config, history)


def _normalisation(xs: np.ndarray, mesh) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and std of the inputs of every process (each holds its share `xs`)."""
    if mesh.devices.shape[0] == 1:
        return mdl.normalisation_from_data(xs)
    xs64 = np.asarray(xs, np.float64)
    moments = parallel.gather_from_processes(
        np.concatenate([[xs.shape[0]], xs64.mean(0), xs64.var(0)]).astype(np.float32), mesh
    )
    counts, means, variances = (
        moments[:, :1],
        moments[:, 1 : 1 + xs.shape[1]],
        moments[:, 1 + xs.shape[1] :],
    )
    counts, means, variances = (np.asarray(a, np.float64) for a in (counts, means, variances))
    mean = (counts * means).sum(0) / counts.sum()
    std = np.sqrt((counts * (variances + (means - mean) ** 2)).sum(0) / counts.sum())
    std = np.where(std > 0, std, 1.0)
    return tuple(mean.tolist()), tuple(std.tolist())


def evaluate_nll(graphdef, params, xs, ys, *, chunk_size: int = 16384) -> float:
    """Mean negative log-likelihood in nats per sample over `xs [N, in]`, `ys [N, D]`, in chunks."""
    apply = _jitted_nll_sum(graphdef)
    params = parallel.local(params)  # one device's copy: replicated params would repeat the work
    xs, ys = np.asarray(xs, np.float32), np.asarray(ys, np.float32)
    total = 0.0
    for start in range(0, xs.shape[0], chunk_size):
        total += float(
            apply(params, xs[start : start + chunk_size], ys[start : start + chunk_size])
        )
    return total / xs.shape[0]


_NLL_CACHE: dict[Any, Callable] = {}


def _jitted_nll_sum(graphdef):
    if graphdef not in _NLL_CACHE:
        _NLL_CACHE[graphdef] = jax.jit(
            lambda params, x, y: -jnp.sum(mx.log_prob(mdl.apply(graphdef, params, x), y))
        )
    return _NLL_CACHE[graphdef]
