"""Resuming a training run on images: where it starts, and what a resume may not change.

A resume continues from the run folder's latest checkpoint, and only with the settings, images
and batch order it was trained with, so that it reaches the parameters an uninterrupted run
reaches; a changed learning rate is allowed but said. Used by `mdn_jax.runs`.
"""

from __future__ import annotations

from pathlib import Path

from mdn_jax import checkpoint as ckpt
from mdn_jax import media, stacked_checkpoint


def resume_point(run, *, resume: bool, num_samples: int):
    """`(start_epoch, state or None, history)` of `run` (a `runs._Run`: its out, configs,
    placement, main and log): a fresh start, or the state of its latest checkpoint when resuming
    with the same settings and images."""
    out, model_config, train_config = run.out, run.model_config, run.train_config
    checkpoint_dir = out / "checkpoint"
    latest = ckpt.latest_epoch(checkpoint_dir)
    if not resume and latest is not None:
        raise ckpt.CheckpointError(
            f"{out} already holds a trained run (checkpoint at epoch {latest}); "
            "pass --resume to continue it or choose a new --out folder"
        )
    if not resume:
        return 0, None, []
    if latest is None:
        raise ckpt.CheckpointError(f"no checkpoint in {checkpoint_dir}; start without --resume")
    stacked_checkpoint.refuse_single_resume(out, checkpoint_dir)
    restored = ckpt.restore(checkpoint_dir, mesh=run.placement.mesh)
    # The optimiser state's structure depends on schedule and clipping, and the batch order on
    # the data and batch size, so those must match for resume to equal an uninterrupted run.
    keys = ("seed", "schedule", "clip_norm", "batch_size", "loss", "adam_b2", "adam_eps")
    was = {
        **restored.model_config.to_dict(),
        **{k: getattr(restored.train_config, k) for k in keys},
        "training pixels": restored.num_samples,
    }
    now = {
        **model_config.to_dict(),
        **{k: getattr(train_config, k) for k in keys},
        "training pixels": num_samples,
    }
    changed = [f"{k} {was[k]!r} (now {now[k]!r})" for k in was if was[k] != now.get(k)]
    if changed:
        raise ckpt.CheckpointError(
            f"{out} was trained with other settings: {', '.join(changed)}; resume with the same "
            "images and flags or start a new --out folder"
        )
    if restored.train_config.learning_rate != train_config.learning_rate:
        run.log(changed_rate(restored.train_config.learning_rate, train_config.learning_rate))
    if run.main:  # frames of epochs after this checkpoint belong to a run that was dropped
        media.remove_frames_after(out / "frames", restored.epoch)
    run.log(f"resuming {out} from epoch {restored.epoch}")
    return restored.epoch, restored.state, list(restored.history)


def changed_rate(was: float, now: float) -> str:
    """Resuming with another learning rate is allowed (a lower one after a non-finite stop is
    the usual fix), but never silently."""
    return (
        f"--lr {now:g} replaces the {was:g} of the checkpoint: the run continues with the new "
        "rate, so it no longer equals an uninterrupted run"
    )


def where_to_resume(out: Path) -> str:
    kept = ckpt.latest_epoch(out / "checkpoint")
    if kept is not None:
        return (
            f"the checkpoint of epoch {kept} is kept: continue with --resume and one of those "
            "changes"
        )
    return "no checkpoint was written yet: start again with one of those changes"
