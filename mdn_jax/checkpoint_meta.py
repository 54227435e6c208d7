"""What a checkpoint must say about itself, and the one-line errors when it does not.

The `meta` item's format, configs and history (`read_meta`), the arrays' layout compared with
what the configs build (`layout`, `check_layout`), and `CheckpointError` with its messages.
`mdn_jax.checkpoint` re-exports the public names; `mdn_jax.stacked_checkpoint` uses these too.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import orbax.checkpoint as ocp

from mdn_jax import config as cfg

FORMAT = 1


class CheckpointError(ValueError):
    """A missing, incomplete or inconsistent checkpoint; the message says what to do."""


def layout(tree) -> dict[str, tuple]:
    """`{"params/trunk/0/kernel/value": (shape, dtype), ...}` for arrays or Orbax array metadata."""

    def name(key):
        return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))

    return {
        "/".join(map(name, path)): (tuple(leaf.shape), str(leaf.dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


class Meta(NamedTuple):
    model_config: cfg.ModelConfig
    train_config: cfg.TrainConfig
    num_samples: int
    key_impl: str
    history: list


def read_meta(manager: ocp.CheckpointManager, epoch: int, where: Path) -> Meta:
    """The `meta` item of `epoch`, checked; CheckpointError naming `where` if it is unusable."""
    try:  # a hand-edited or foreign `meta` item: every way it can be wrong ends here
        meta = manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if _entry(meta, "format") != FORMAT:
            raise ValueError(
                f"format {meta['format']!r}, but this mdn_jax reads format {FORMAT}; use the "
                "mdn_jax version that wrote it"
            )
        result = Meta(
            cfg.ModelConfig.from_dict(_entry(meta, "model_config")),
            cfg.TrainConfig.from_dict(_entry(meta, "train_config")),
            _positive(_entry(meta, "num_samples")),
            _entry(meta, "key_impl"),
            _entry(meta, "history"),
        )
        if _entry(meta, "epoch") != epoch:
            raise ValueError(
                f"it says epoch {meta['epoch']!r} but sits in the folder of epoch {epoch}"
            )
        if not isinstance(result.history, list) or not all(
            isinstance(record, dict) for record in result.history
        ):
            raise ValueError(
                f"history must be a list of per-epoch records, got {str(result.history)[:40]}"
            )
        jax.random.key(0, impl=result.key_impl)  # an unknown key implementation fails here
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"unreadable checkpoint metadata in {where}: {first_line(error)}"
        ) from None
    return result


def check_layout(stored: dict, wanted: dict, where: Path, meta: Meta) -> None:
    if stored != wanted:
        path = min(set(stored) ^ set(wanted) or {p for p in wanted if stored[p] != wanted[p]})
        raise CheckpointError(
            f"checkpoint {where} does not match its stored config (hidden="
            f"{meta.model_config.hidden}, structure={meta.model_config.structure!r}, clip_norm="
            f"{meta.train_config.clip_norm}): {path} is {stored.get(path, 'missing')} on disk but "
            f"{wanted.get(path, 'absent')} in the model and optimiser the config builds"
        )


def _entry(meta, name: str):
    if not isinstance(meta, dict) or name not in meta:
        raise ValueError(f"it has no {name!r} entry")
    return meta[name]


def _positive(value) -> int:
    if not cfg.is_positive(value, integer=True):
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def first_line(error: BaseException, limit: int = 200) -> str:
    text = (
        error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    )  # KeyError str() quotes
    text = str(text).splitlines()[0] if str(text) else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def damaged(where: Path, error: BaseException) -> str:
    return (
        f"checkpoint {where} is damaged: its arrays cannot be read "
        f"({first_line(error, 120)}); move that "
        "folder away to resume from the previous checkpoint, if there is one, or train again"
    )
