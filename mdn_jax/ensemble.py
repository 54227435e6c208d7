"""Ensembles as mixtures: M stacked members' mixtures as ONE mixture of their average density.

An ensemble of M MDNs predicts p(y | x) = (1/M) sum_m p_m(y | x). When each member is a mixture
of K components, that is itself a mixture, of M x K components with weights (1/M) x each
member's weights. So `log_prob`, `sample`, `mean`, `variance`, every render method and bits per
channel take the combined mixture unchanged, and its NLL is never above the members' average
(the log of a mean is at least the mean of the logs).

Members come stacked on a batch axis, as `jax.vmap(mdn_jax.apply, in_axes=(None, 0, None))`
or a stacked fit's `predict` gives them: a mixture with batch shape `[M, ...]`.
"""

from __future__ import annotations

from mdn_jax import structures
from mdn_jax.mixture import Mixture


def combine(stacked: Mixture, *, axis: int = 0) -> Mixture:
    """One mixture of the members stacked on batch axis `axis`, each weighted 1/M.

    stacked: a mixture whose batch shape holds the M members on `axis`, e.g. `[M, ...]`.
    Returns a mixture with that axis removed, batch `[...]`:
      - joint and full: the same structure with M * K components, member-major (component
        m * K + k is member m's component k);
      - per_dim: a joint mixture of M * K^D components (each member's independent
        per-dimension mixtures multiplied out, see `structures.per_dim.combine_members`; a
        per_dim mixture cannot hold an ensemble's density), refused with a one-line ValueError
        beyond `structures.per_dim.MAX_COMBINED_COMPONENTS`.
    """
    entry = structures.of(stacked)
    batch = entry.batch_shape(stacked)
    if not batch:
        raise ValueError(
            "combine needs the members on a batch axis, but this mixture has none; stack the "
            "members' mixtures first (jax.vmap over their params, or a stacked fit's predict)"
        )
    if not -len(batch) <= axis < len(batch):
        raise ValueError(
            f"axis {axis} is not a batch axis of a mixture with batch shape {batch}; "
            f"pass one of 0..{len(batch) - 1}"
        )
    return entry.combine_members(stacked, axis=axis % len(batch))
