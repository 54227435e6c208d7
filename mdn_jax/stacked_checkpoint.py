"""Checkpoints of a stacked fit (`mdn_jax.stacked`), in `mdn_jax.checkpoint`'s layout and code.

Same folders, atomic saves and errors as a single model's checkpoint; the differences:

- `state/`: the stacked `TrainState`, every leaf with a leading `[M]` axis (params padded to the
  widest member, the member optimiser's state, `step [M]`, key data `[M, 2]`);
- `meta/`: a single model's entries for member 0 (so `checkpoint.restore` of it fails with its
  usual one-line layout error rather than misreading it) plus `"members"`: every member's
  `{"model_config", "train_config"}`.

`restore_stacked` rebuilds the exact structure `fit_stacked` trains from the stored configs
(`jax.eval_shape`: nothing runs), so resuming is bit-identical to an uninterrupted fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.flatten_util import ravel_pytree

from mdn_jax import checkpoint as ckpt
from mdn_jax import config as cfg
from mdn_jax import model as mdl
from mdn_jax import stacked_members as sm
from mdn_jax import step
from mdn_jax.config import TrainConfig


class RestoredStacked(NamedTuple):
    """A restored stacked checkpoint; `state` goes back into `fit_stacked(state=...,
    start_epoch=epoch)` with the same configs."""

    state: step.TrainState
    graphdef: Any  # the padded model's
    model_configs: tuple[mdl.ModelConfig, ...]
    train_configs: tuple[TrainConfig, ...]
    epoch: int
    history: list[dict]
    num_samples: int

    def fit(self):
        """The checkpoint as a `stacked.StackedFit` (members, predictions)."""
        from mdn_jax import stacked

        wide = sm.wide_config(self.model_configs)
        return stacked.StackedFit(
            self.graphdef, self.state, self.history, self.model_configs, self.train_configs, wide
        )


def save_stacked(
    directory,
    *,
    state: step.TrainState,
    model_configs,
    train_configs,
    epoch: int,
    num_samples: int,
    history: list[dict] | None = None,
    keep: int = 2,
) -> Path:
    """`checkpoint.save` of a stacked state with every member's configs (same rules)."""
    directory = Path(directory).absolute()
    cfg.positive_int("keep", keep)
    cfg.non_negative_int("epoch", epoch)
    latest = ckpt.latest_epoch(directory)
    if latest is not None and epoch <= latest:
        raise ckpt.CheckpointError(
            f"{directory} already has a checkpoint for epoch {latest} and epoch {epoch} "
            "is not newer; save to another directory or delete the later checkpoints"
        )
    arrays = state._replace(key=jax.random.key_data(state.key))._asdict()
    meta = {
        "format": ckpt.FORMAT,
        "epoch": epoch,
        "num_samples": int(num_samples),
        "key_impl": str(jax.random.key_impl(state.key)),
        "model_config": model_configs[0].to_dict(),
        "train_config": train_configs[0].to_dict(),
        "history": list(history or []),
        "members": [
            {"model_config": m.to_dict(), "train_config": t.to_dict()}
            for m, t in zip(model_configs, train_configs, strict=True)
        ],
    }
    with ckpt._quiet(), ckpt._manager(directory, max_to_keep=keep, create=True) as manager:
        manager.save(
            epoch,
            force=True,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)
            ),
        )
        manager.wait_until_finished()
    return directory / str(epoch)


def is_stacked(directory, *, epoch: int | None = None) -> bool:
    """Whether the (latest, or `epoch`'s) checkpoint in `directory` holds a stacked fit."""
    directory = Path(directory).absolute()
    epoch = ckpt.latest_epoch(directory) if epoch is None else epoch
    if epoch is None:
        return False
    try:  # the manager too: a trainer may be deleting this epoch's folder right now
        with ckpt._quiet(), ckpt._manager(directory, create=False) as manager:
            meta = ocp.args.Composite(meta=ocp.args.JsonRestore())
            raw = manager.restore(epoch, args=meta).meta
    except Exception:  # unreadable or gone: let restore report it
        return False
    return isinstance(raw, dict) and "members" in raw


def refuse_single_resume(out: Path, directory: Path) -> None:
    """CheckpointError when a single-model run is asked to resume the ensemble in `directory`."""
    if is_stacked(directory):
        raise ckpt.CheckpointError(
            f"{out} holds an ensemble; resume it with the same --ensemble and per-member flags"
        )


def restore_stacked(
    directory, *, epoch: int | None = None, mesh: jax.sharding.Mesh | None = None
) -> RestoredStacked:
    """Load a stacked checkpoint (default: the latest epoch); arrays on this process's first
    device or replicated over `mesh`. CheckpointError, one line, for anything unusable."""
    directory = Path(directory).absolute()
    epochs = ckpt._epochs(directory)
    if not epochs:
        raise ckpt.CheckpointError(f"no checkpoint in {directory}; train first or check the path")
    epoch = epochs[-1] if epoch is None else epoch
    if epoch not in epochs:
        raise ckpt.CheckpointError(
            f"no checkpoint for epoch {epoch} in {directory}; available: {epochs}"
        )
    where = directory / str(epoch)
    with ckpt._quiet(), ckpt._manager(directory, create=False) as manager:
        meta = ckpt._read_meta(manager, epoch, where)
        model_configs, train_configs = _members(manager, epoch, where)
        graphdef, target = _target(model_configs, train_configs, meta, mesh)
        try:
            stored = ckpt._layout(manager.item_metadata(epoch)["state"])
        except Exception as error:
            raise ckpt.CheckpointError(ckpt._damaged(where, error)) from None
        ckpt._check_layout(stored, ckpt._layout(target), where, meta)
        try:
            arrays = manager.restore(
                epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            ).state
        except Exception as error:
            raise ckpt.CheckpointError(ckpt._damaged(where, error)) from None
    key = jax.random.wrap_key_data(arrays["key"], impl=meta.key_impl)
    state = step.TrainState(arrays["params"], arrays["opt_state"], arrays["step"], key)
    history = [dict(record) for record in meta.history]
    return RestoredStacked(
        state, graphdef, model_configs, train_configs, epoch, history, meta.num_samples
    )


def _members(manager, epoch: int, where: Path):
    try:
        raw = manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        members = raw["members"]
        model_configs = tuple(mdl.ModelConfig.from_dict(m["model_config"]) for m in members)
        train_configs = tuple(TrainConfig.from_dict(m["train_config"]) for m in members)
        sm.check_members(model_configs, train_configs)
    except (ValueError, KeyError, TypeError) as error:
        raise ckpt.CheckpointError(
            f"{where} is not a stacked checkpoint with usable members ({ckpt._first_line(error)}); "
            "restore it with checkpoint.restore, or train again"
        ) from None
    return model_configs, train_configs


def _target(model_configs, train_configs, meta, mesh):
    """The padded graphdef and the stacked state's shapes, dtypes and placement."""
    first = train_configs[0]
    total_steps = first.epochs * step.steps_per_epoch(meta.num_samples, first.batch_size)
    base = step.make_optimizer(sm.base_train_config(first), total_steps=total_steps)
    wide = sm.wide_config(model_configs)

    def fresh(key):
        graphdef, params = mdl.init(wide, key=key)
        flat = ravel_pytree(params)[0]
        settings = sm.Settings(jnp.zeros(()), jnp.ones(()), jnp.zeros_like(flat))
        state = step.init_state(params, sm.member_optimizer(base, settings), key=key)
        return graphdef, state._replace(key=jax.random.key_data(key))

    graphdef, state = jax.eval_shape(fresh, jax.random.key(0, impl=meta.key_impl))
    placement = (
        jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        if mesh is None
        else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )
    count = len(model_configs)
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((count, *a.shape), a.dtype, sharding=placement),
        state._asdict(),
    )
    return graphdef, target
