"""Optax training: the host loop around one compiled `jax.lax.scan` per epoch.

The pieces, from the inside out:

- `mdn_jax.step`: the compiled step and epoch as pure functions (a guarded optimiser step; a
  `lax.scan` of it over every batch of an epoch on device-resident data, the state donated).
- `Trainer(graphdef, optimizer)`: those two jitted for one model and optimiser, as
  `step(state, x, y) -> (state, loss)` and `epoch(state, xs, ys, batch_indices) -> (state, losses)`.
- `fit(xs, ys, ...)`: builds the model, shuffles on the host, calls `epoch` once per epoch,
  applies the non-finite policy, keeps one history record per epoch and runs callbacks after each.
- `mdn_jax.train_checks` (`check_arrays`, `check_batch_size`) and `mdn_jax.evaluation`
  (`evaluate_nll`): the data's boundary checks and held-out NLL, re-exported here.

Several devices: `fit` trains data parallel (see `mdn_jax.parallel.Placement`): the batch axis is
sharded, params and optimiser state are replicated, the scanned epoch is the same and XLA
inserts the gradient all-reduce. With one device no mesh is used and the epoch is exactly the
single-device program.

Last partial batch: when N is not a multiple of the batch size, the shuffled order is padded by
wrapping around to its start, so every sample is seen at least once per epoch, every batch has
the same shape (one compiled step) and `ceil(N / batch_size)` steps run per epoch; the few
samples that wrap around are seen twice in that epoch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import guards, parallel
from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax.config import LOSSES as LOSSES  # re-exported: TrainConfig lived here
from mdn_jax.config import ON_NONFINITE as ON_NONFINITE
from mdn_jax.config import SCHEDULES as SCHEDULES
from mdn_jax.config import TrainConfig
from mdn_jax.evaluation import evaluate_nll as evaluate_nll

# The compiled half of training lives in mdn_jax.step; these names stay importable from here.
from mdn_jax.step import (
    LossFn,
    TrainState,
    loss_named,
    make_optimizer,
    shuffled_batches,
    steps_per_epoch,
)
from mdn_jax.step import nll_loss as nll_loss
from mdn_jax.train_checks import check_arrays as check_arrays
from mdn_jax.train_checks import check_batch_size as check_batch_size
from mdn_jax.trainer import Trainer as Trainer


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or gradient and was told to stop (one-line message)."""


@dataclasses.dataclass(frozen=True)
class EpochReport:
    """What a callback receives after each epoch.

    `state` is valid during the callback only: the next epoch donates (deletes) its buffers. To
    keep it, copy it: `jax.tree_util.tree_map(jnp.copy, report.state)`.
    """

    # This epoch's history record: "epoch" (1-based), "loss" (mean training loss over the
    # epoch's applied steps), "seconds" (wall time; the first includes compilation),
    # "samples_per_second", "skipped_steps" when some were, and what earlier callbacks added.
    record: Mapping[str, Any]
    state: TrainState
    graphdef: Any
    model_config: mdl.ModelConfig

    @property
    def epoch(self) -> int:
        return self.record["epoch"]

    @property
    def loss(self) -> float:
        return self.record["loss"]

    @property
    def seconds(self) -> float:
        return self.record["seconds"]

    @property
    def samples_per_second(self) -> float:
        return self.record["samples_per_second"]


# Called after each epoch. Returning True stops training after this epoch; returning a mapping
# adds its entries to the epoch's history record (later callbacks and the history see them).
Callback = Callable[[EpochReport], Any]

_apply = jax.jit(mdl.apply, static_argnums=0)


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
        params = parallel.local(self.params)  # one device: replicated copies would repeat work
        return _apply(self.graphdef, params, jnp.asarray(x))


def _checked(xs, ys, model_config: mdl.ModelConfig | None):
    """The arrays as float32 and the model config (default: the reference trunk for them)."""
    xs, ys = check_arrays(xs, ys)
    if model_config is None:
        model_config = mdl.ModelConfig(in_features=xs.shape[1], out_features=ys.shape[1])
    if (model_config.in_features, model_config.out_features) != (xs.shape[1], ys.shape[1]):
        raise ValueError(
            f"model expects {model_config.in_features} inputs and {model_config.out_features} "
            f"outputs but the data has {xs.shape[1]} and {ys.shape[1]}"
        )
    return xs, ys, model_config


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
    `start_epoch` to resume. Callbacks run after each epoch (see `Callback`): one returning True
    stops training after that epoch. `loss` overrides the loss named by `train_config.loss`.

    Devices: data parallel over `devices` devices (None: all of them; see `mdn_jax.parallel`).
    The batch size must be a multiple of the device count. On one host the shuffle is the same
    for any device count, so 1 and 4 devices train the same model up to float rounding. Under
    `jax.distributed.initialize()` every process calls `fit` with its own share of the data
    (e.g. `xs[parallel.process_share(N)]`) and the same configs; each epoch's batch is the
    processes' own shuffled rows side by side, `batch_size / processes` from each.
    """
    xs, ys, model_config = _checked(xs, ys, model_config)
    train_config = train_config or TrainConfig()
    placement = parallel.Placement.build(devices, batch_size=train_config.batch_size)
    return fit_placed(
        placement,
        xs,
        ys,
        model_config=model_config,
        train_config=train_config,
        callbacks=callbacks,
        normalise_inputs=normalise_inputs,
        state=state,
        start_epoch=start_epoch,
        loss=loss,
    )


def fit_placed(
    placement: parallel.Placement,
    xs,
    ys,
    *,
    model_config: mdl.ModelConfig,
    train_config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    normalise_inputs: bool = True,
    state: TrainState | None = None,
    start_epoch: int = 0,
    loss: LossFn | None = None,
) -> FitResult:
    """`fit` on a `parallel.Placement` the caller built (and checked the batch size against)."""
    xs, ys, model_config = _checked(xs, ys, model_config)
    share_sizes = placement.gather(np.array([xs.shape[0]]))[:, 0]  # [P]
    check_batch_size(train_config.batch_size, int(share_sizes.sum()))
    if normalise_inputs and model_config.input_offset is None and model_config.input_scale is None:
        offset, scale = placement.normalisation(xs)
        model_config = dataclasses.replace(model_config, input_offset=offset, input_scale=scale)
    init_key, shuffle_key = jax.random.split(jax.random.key(train_config.seed))
    graphdef, params = mdl.init(model_config, key=init_key)
    process_batch = train_config.batch_size // placement.processes  # rows from each process
    batches_per_epoch = steps_per_epoch(int(share_sizes.max()), process_batch)
    trainer = Trainer(
        graphdef,
        make_optimizer(train_config, total_steps=train_config.epochs * batches_per_epoch),
        loss=loss or loss_named(train_config.loss),
        mesh=placement.mesh,
    )
    state = trainer.init(params, key=shuffle_key) if state is None else placement.put_state(state)
    xs_device, ys_device = (
        placement.put_data(a, max_rows=int(share_sizes.max())) for a in (xs, ys)
    )
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch + 1, train_config.epochs + 1):
        start = time.perf_counter()
        key, epoch_key = jax.random.split(state.key)
        # Each process shuffles its own share, all into the same number of batches.
        batches = shuffled_batches(
            placement.shuffle_key(epoch_key),
            xs.shape[0],
            process_batch,
            num_batches=batches_per_epoch,
        )
        state, losses = trainer.epoch(
            state._replace(key=key), xs_device, ys_device, placement.put_batch_indices(batches)
        )
        losses = np.asarray(losses)  # waits for the epoch to finish
        seconds = time.perf_counter() - start
        record = _epoch_record(epoch, losses, seconds, train_config, targets=ys)
        report, stop = _run_callbacks(callbacks, EpochReport(record, state, graphdef, model_config))
        history.append(dict(report.record))
        if stop:
            break
    return FitResult(graphdef, state, model_config, history)


def _epoch_record(
    epoch: int, losses: np.ndarray, seconds: float, config: TrainConfig, *, targets: np.ndarray
) -> dict:
    """The history record of epoch `epoch` (1-based) from its step losses `[num_batches]` (NaN
    for a skipped step); raises NonFiniteError for a skipped step unless told to skip, with the
    fix that suits the training `targets [N, D]` (`guards.nonfinite_fix`)."""
    skipped = np.flatnonzero(~np.isfinite(losses))
    if skipped.size and config.on_nonfinite == "stop":
        raise NonFiniteError(
            f"non-finite loss or gradient in epoch {epoch} at step {int(skipped[0]) + 1} of "
            f"{len(losses)}; " + guards.nonfinite_fix(targets)
        )
    applied = losses[np.isfinite(losses)]
    record = {
        "epoch": epoch,
        "loss": float(np.mean(applied)) if applied.size else float("nan"),
        "seconds": seconds,
        "samples_per_second": len(losses) * config.batch_size / seconds,
    }
    if skipped.size:
        record["skipped_steps"] = int(skipped.size)
    return record


def _run_callbacks(callbacks: Sequence[Callback], report: EpochReport) -> tuple[EpochReport, bool]:
    """Run every callback in order; returns the report with their additions and whether any
    asked to stop."""
    stop = False
    for callback in callbacks:
        answer = callback(report)
        if isinstance(answer, Mapping):
            report = dataclasses.replace(report, record={**report.record, **answer})
        stop = stop or answer is True
    return report, stop
