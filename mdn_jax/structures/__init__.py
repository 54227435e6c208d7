"""The mixture structures and the one table that dispatches on them.

Each structure lives in its own module (`joint`, `per_dim`, `full`) and describes itself with a
`Structure` (see `spec.py`). `of(mixture)` finds a mixture's entry by its type, `named(name)`
by the name a config uses. Adding a structure: one module and one line in `TABLE`.
"""

from __future__ import annotations

from mdn_jax.structures import full, joint, per_dim
from mdn_jax.structures.spec import Structure

TABLE: tuple[Structure, ...] = (joint.STRUCTURE, per_dim.STRUCTURE, full.STRUCTURE)
NAMES: tuple[str, ...] = tuple(entry.name for entry in TABLE)
_BY_TYPE = {entry.mixture_type: entry for entry in TABLE}
_BY_NAME = {entry.name: entry for entry in TABLE}


def of(mixture) -> Structure:
    """The table entry for a mixture (a NamedTuple from `mdn_jax.joint`, `per_dim` or `full`)."""
    entry = _BY_TYPE.get(type(mixture))
    if entry is not None:
        return entry
    for entry in TABLE:  # subclasses of a mixture type
        if isinstance(mixture, entry.mixture_type):
            return entry
    raise TypeError(
        f"expected a mixture from mdn_jax.{'/'.join(NAMES)}, got {type(mixture).__name__}"
    )


def named(name: str) -> Structure:
    """The table entry for a structure's name ('joint', 'per_dim' or 'full')."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"structure must be one of {', '.join(NAMES)}, got {name!r}") from None


__all__ = ["NAMES", "TABLE", "Structure", "full", "joint", "named", "of", "per_dim"]
