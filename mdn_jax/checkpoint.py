"""Save and restore training checkpoints (Orbax) so an interrupted `fit` can resume exactly.

Layout: one directory per epoch, `directory/<epoch>/`, written by an Orbax `CheckpointManager`
as two items:

- `state/` (Orbax StandardSave, i.e. tensorstore/OCDBT arrays): the `TrainState` as
  `{"params": params pytree, "opt_state": optimiser state of the flat params (Adam's `mu`/`nu`
  `[P]` and `count` `[]`, plus any clipping/schedule state), "step": int32 [],
  "key": jax.random.key_data(key), uint32 [2] for the default threefry key}`.
- `meta/` (Orbax JsonSave): `{"format", "epoch", "num_samples", "key_impl", "model_config",
  "train_config", "history"}`; `num_samples` (N) is what `fit` used for
  `total_steps = epochs * ceil(N / batch_size)`, so `restore` rebuilds the identical optimiser.

Atomicity: Orbax writes each save into a temporary directory beside `directory/<epoch>` and
renames it into place only when every item is written (`os.rename`, atomic on a local POSIX
filesystem). A crash before the rename leaves only that temporary directory, which Orbax's step
listing (`orbax.checkpoint.path.step.checkpoint_steps`, used by `latest_epoch`) never reports as
a checkpoint and the next save of that epoch deletes. The manager is created with
`enable_async_checkpointing=False`, so `save` returns only after the rename and after
checkpoints older than the newest `keep` have been deleted. A crash while Orbax deletes an old
checkpoint leaves that (older, never the newest) folder half deleted; the next save past `keep`
deletes it again. `remove_unfinished` clears temporary directories that no later save will
replace.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from mdn_jax import checkpoint_meta, step, train
from mdn_jax import config as cfg
from mdn_jax import model as mdl
from mdn_jax.checkpoint_meta import FORMAT as FORMAT
from mdn_jax.checkpoint_meta import CheckpointError as CheckpointError
from mdn_jax.checkpoint_meta import Meta as _Meta
from mdn_jax.checkpoint_meta import check_layout as _check_layout
from mdn_jax.checkpoint_meta import damaged as _damaged
from mdn_jax.checkpoint_meta import layout as _layout
from mdn_jax.checkpoint_meta import read_meta as _read_meta

_first_line = checkpoint_meta.first_line  # used by mdn_jax.stacked_checkpoint


class Restored(NamedTuple):
    """A restored checkpoint; `state` goes straight back into
    `fit(state=..., start_epoch=epoch)`."""

    state: train.TrainState
    graphdef: Any
    model_config: mdl.ModelConfig
    train_config: train.TrainConfig
    epoch: int  # epochs completed when saved
    history: list[dict]
    num_samples: int  # N the optimiser schedule was built for


@contextlib.contextmanager
def _quiet():
    """Orbax logs every save/restore step at INFO through absl; hide that (and its warnings).

    A failed write (a full disk) is also logged at ERROR, with a traceback, by each of Orbax's
    writer threads before the error is raised here; the raised error is what callers report."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _manager(directory: Path, **options) -> ocp.CheckpointManager:
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(
        directory,
        item_handlers=handlers,
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, **options),
    )


def _epochs(directory: Path) -> list[int]:
    with _quiet():
        return sorted(ocp.path.step.checkpoint_steps(directory)) if directory.is_dir() else []


def latest_epoch(directory) -> int | None:
    """The newest complete checkpoint's epoch in `directory`, or None; temporary dirs are
    ignored."""
    epochs = _epochs(Path(directory).absolute())
    return epochs[-1] if epochs else None


def remove_unfinished(directory) -> list[Path]:
    """Delete the temporary directories of saves that never finished in `directory`; return them.

    Only for a directory no other process is saving to: a live save's temporary looks the same.
    """
    # Orbax's own `CheckpointManagerOptions(cleanup_tmp_directories=True)` (orbax-checkpoint
    # 0.12.8) starts this cleanup in the background and only the next `save` waits for it; no
    # public call awaits it or says what it removed. So the temporaries are found by the suffix
    # Orbax's public `path.step` module names, and removed here, before this returns.
    directory = Path(directory)
    if not directory.is_dir():
        return []
    unfinished = sorted(p for p in directory.glob("*" + ocp.path.step.TMP_DIR_SUFFIX) if p.is_dir())
    for path in unfinished:
        shutil.rmtree(path)
    return unfinished


def save(
    directory,
    *,
    state: train.TrainState,
    model_config: mdl.ModelConfig,
    train_config: train.TrainConfig,
    epoch: int,
    num_samples: int,
    history: list[dict] | None = None,
    keep: int = 2,
) -> Path:
    """Write the checkpoint for `epoch` to `directory/<epoch>/`, keep the newest `keep`; return
    its path.

    Synchronous: the checkpoint is complete on disk when this returns. Epochs must increase
    within a directory: saving an epoch at or below the latest one raises CheckpointError.
    Under `jax.distributed` every process calls `save` with the same (replicated) state; Orbax
    writes each array once and synchronises the processes.
    """
    directory = Path(directory).absolute()
    cfg.positive_int("keep", keep)
    cfg.non_negative_int("epoch", epoch)
    # With several processes each checks here before the manager's creation barrier, so none can
    # see the checkpoint another is about to write.
    latest = latest_epoch(directory)
    if latest is not None and epoch <= latest:
        raise CheckpointError(
            f"{directory} already has a checkpoint for epoch {latest} and epoch {epoch} "
            "is not newer; save to another directory or delete the later checkpoints"
        )
    # {"params", "opt_state", "step", "key"}: the layout `_target` rebuilds for restore.
    arrays = state._replace(key=jax.random.key_data(state.key))._asdict()
    meta = {
        "format": FORMAT,
        "epoch": epoch,
        "num_samples": int(num_samples),
        "key_impl": str(jax.random.key_impl(state.key)),
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
        "history": list(history or []),
    }
    with _quiet(), _manager(directory, max_to_keep=keep, create=True) as manager:
        # force: skip Orbax's save-interval policy (never silently drop a save); it does not
        # overwrite.
        manager.save(
            epoch,
            force=True,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)
            ),
        )
        manager.wait_until_finished()
    return directory / str(epoch)


def restore(
    directory, *, epoch: int | None = None, mesh: jax.sharding.Mesh | None = None
) -> Restored:
    """Load the checkpoint for `epoch` (default: the latest) from `directory`.

    The arrays come back on this process's first device, or replicated over `mesh` (which may
    span several processes: then every process calls `restore`).

    The arrays are restored into the structure `fit` would build from the stored configs
    (`jax.eval_shape` of the model's init and the optimiser's init: nothing runs or compiles),
    so a checkpoint whose arrays do not fit its own configs raises CheckpointError.
    """
    directory = Path(directory).absolute()
    epochs = _epochs(directory)
    if not epochs:
        raise CheckpointError(f"no checkpoint in {directory}; train first or check the path")
    epoch = epochs[-1] if epoch is None else epoch
    if epoch not in epochs:
        raise CheckpointError(
            f"no checkpoint for epoch {epoch} in {directory}; available: {epochs}"
        )
    where = directory / str(epoch)
    with _quiet(), _manager(directory, create=False) as manager:
        meta = _read_meta(manager, epoch, where)
        graphdef, target = _target(meta, mesh)
        # Files cut short, deleted or overwritten surface as any of tensorstore's and Orbax's
        # exception types, so this boundary catches them all and names the folder.
        try:
            stored = _layout(manager.item_metadata(epoch)["state"])
        except Exception as error:
            raise CheckpointError(_damaged(where, error)) from None
        _check_layout(stored, _layout(target), where, meta)
        try:
            arrays = manager.restore(
                epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            ).state
        except Exception as error:
            raise CheckpointError(_damaged(where, error)) from None
    key = jax.random.wrap_key_data(arrays["key"], impl=meta.key_impl)
    state = train.TrainState(arrays["params"], arrays["opt_state"], arrays["step"], key)
    history = [dict(record) for record in meta.history]
    return Restored(
        state, graphdef, meta.model_config, meta.train_config, epoch, history, meta.num_samples
    )


def _target(meta: _Meta, mesh: jax.sharding.Mesh | None):
    """The graphdef, and the shapes, dtypes and placement of the arrays `fit` would train for
    `meta`'s configs: `jax.eval_shape` of the inits, so no initialiser runs or compiles."""
    total_steps = meta.train_config.epochs * step.steps_per_epoch(
        meta.num_samples, meta.train_config.batch_size
    )
    optimizer = step.make_optimizer(meta.train_config, total_steps=total_steps)

    def fresh(key):
        graphdef, params = mdl.init(meta.model_config, key=key)
        state = step.init_state(params, optimizer, key=key)
        return graphdef, state._replace(key=jax.random.key_data(key))

    graphdef, state = jax.eval_shape(fresh, jax.random.key(0, impl=meta.key_impl))
    # Place every array explicitly: without a sharding Orbax reuses the saved one, which pins a
    # CPU-saved checkpoint to the CPU (and a GPU-saved one fails on CPU).
    placement = (
        jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        if mesh is None
        else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placement), state._asdict()
    )
    return graphdef, target
