"""The host side of a stacked fit (`mdn_jax.stacked.fit_stacked`): the epoch loop and its record.

One compiled call per epoch for all M members; the next epoch's keys and shuffles are drawn
while the current epoch runs (`stacked_members.Shuffles`), and each epoch leaves one history
record with every member's loss `[M]` and the non-finite policy applied per member.
"""

from __future__ import annotations

import time

import numpy as np

from mdn_jax import guards
from mdn_jax import stacked_members as sm
from mdn_jax import train as tr
from mdn_jax.config import TrainConfig


def epoch_loop(
    epochs, state, settings, xs_device, ys_device, ys, first, start_epoch, callbacks, graphdef, wide
):
    """The host loop of `fit_stacked`: one compiled call per epoch, the next epoch's shuffles
    drawn while it runs, one history record per epoch; returns `(state, history)`."""
    history: list[dict] = []
    start = time.perf_counter()
    shuffles = sm.Shuffles(state.key, ys.shape[0], first.batch_size)
    for epoch in range(start_epoch + 1, first.epochs + 1):
        keys, batches = shuffles.take()
        state, losses = epochs.run(
            state._replace(key=keys), settings, xs_device, ys_device, epochs.batch_indices(batches)
        )
        if epoch < first.epochs:
            shuffles.draw()  # while the epoch runs
        losses = np.asarray(losses)  # [M, num_batches]; waits for the epoch to finish
        record = stacked_record(epoch, losses, time.perf_counter() - start, first, targets=ys)
        report, stop = tr._run_callbacks(callbacks, tr.EpochReport(record, state, graphdef, wide))
        history.append(dict(report.record))
        if stop:
            break
        start = time.perf_counter()
    return state, history


def stacked_record(
    epoch: int, losses: np.ndarray, seconds: float, config: TrainConfig, *, targets: np.ndarray
) -> dict:
    """The history record of a stacked epoch from its step losses `[M, num_batches]` (NaN for a
    skipped step); raises NonFiniteError naming the first member with a skipped step, unless
    told to skip."""
    finite = np.isfinite(losses)
    skipped = (~finite).sum(axis=1)  # [M]
    if skipped.any() and config.on_nonfinite == "stop":
        member = int(np.flatnonzero(skipped)[0])
        first_step = int(np.flatnonzero(~finite[member])[0])
        raise tr.NonFiniteError(
            f"non-finite loss or gradient in member {member}, epoch {epoch}, at step "
            f"{first_step + 1} of {losses.shape[1]}; " + guards.nonfinite_fix(targets)
        )
    member_losses = [
        float(np.mean(row[ok])) if ok.any() else float("nan") for row, ok in zip(losses, finite)
    ]
    record = {
        "epoch": epoch,
        "loss": float(np.mean(member_losses)),
        "member_losses": member_losses,
        "seconds": seconds,
        "samples_per_second": losses.size * config.batch_size / seconds,
    }
    if skipped.any():
        record["skipped_steps"] = [int(s) for s in skipped]
    return record
