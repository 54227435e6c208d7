"""The labelled pictures of an ensemble's run folder (`mdn-jax train --ensemble M`).

- `reconstructions_picture`: each training image, then per pixel the closest component mean of
  the ensemble (of all its M x K components) and of each member, with their coverage PSNRs, as
  a single run's reconstructions.png shows one model;
- `uncertainty_picture`: the ensemble's predictive standard deviation (the members' own spread
  plus their disagreement, `mdn_jax.ensemble_render`), on the fixed scale of a single run's;
- `loss_picture`: every member's training loss per epoch (and the ensemble's held-out NLL when
  the history holds one per epoch);
- `write_pictures`: all three into a run folder, each atomically, through
  `mdn_jax.safe_outputs.write_each`: a picture that cannot be made is skipped with one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mdn_jax import ensemble_render, layout, media, metrics, reconstruct, safe_outputs
from mdn_jax import run_pictures as rp

RECONSTRUCTIONS_TITLE = (
    "training image | closest component mean per pixel of the ensemble (all members' "
    "components) and of each member, coverage PSNR"
)


def reconstructions(fit, images: np.ndarray) -> dict:
    """Per pixel of each training image `[N, H, W, 3]` the closest component mean (clipped to
    [0, 1]) of each member of the stacked fit `fit` and of the ensemble, with their PSNRs.

    The ensemble's components are all the members' (weights do not matter for the closest
    mean), so its reconstruction takes at each pixel the member reconstruction closest to the
    image; its PSNR is at least every member's. Returns `{"members": [M] of [N, H, W, 3],
    "member_psnrs": [M] lists of N, "ensemble": [N, H, W, 3], "ensemble_psnrs": N}` (PSNRs in
    dB, as `metrics.coverage_psnr` rounds them).
    """
    images = np.asarray(images, np.float32)
    members, member_psnrs = [], []
    ensemble, best = None, None
    for m in range(fit.size):
        own = fit.member(m)
        pictures, psnrs = reconstruct.reconstructions(own.graphdef, own.params, images)
        errors = np.sum(np.square(pictures - images), axis=-1, keepdims=True)  # over channels
        if ensemble is None:
            ensemble, best = pictures, errors
        else:  # strictly closer only, so a tie keeps the earlier member, as argmin over M x K
            closer = errors < best
            ensemble, best = np.where(closer, pictures, ensemble), np.minimum(errors, best)
        members.append(pictures)
        member_psnrs.append(psnrs)
    mse = np.mean(np.square(ensemble - images), axis=(1, 2, 3))  # [N], per channel
    return {
        "members": members,
        "member_psnrs": member_psnrs,
        "ensemble": ensemble,
        "ensemble_psnrs": metrics.coverage_psnr(mse),
    }


def reconstructions_picture(fit, images: np.ndarray) -> np.ndarray:
    """One row per training image `[N, H, W, 3]`: the image, the ensemble's reconstruction and
    each member's (see `reconstructions`), labelled 'image 1', 'ensemble: 31.2 dB',
    'member 0: 29.8 dB', ...; `M + 2` columns."""
    found = reconstructions(fit, images)
    tiles, labels = [], []
    for n, image in enumerate(np.asarray(images, np.float32)):
        tiles += [image, found["ensemble"][n], *(own[n] for own in found["members"])]
        labels += [f"image {n + 1}", f"ensemble: {found['ensemble_psnrs'][n]:.1f} dB"]
        labels += [
            f"member {m}: {psnrs[n]:.1f} dB" for m, psnrs in enumerate(found["member_psnrs"])
        ]
    return layout.labelled_tiles(tiles, labels, columns=fit.size + 2, title=RECONSTRUCTIONS_TITLE)


def uncertainty_picture(fit, *, height: int, width: int) -> np.ndarray:
    """The ensemble's predictive standard deviation as a single run's uncertainty.png draws
    one model's (`run_pictures.uncertainty_layout`): the same fixed scale and colour bar."""
    values = ensemble_render.render_values(fit, height=height, width=width, method="uncertainty")
    title = (
        f"predictive std of the ensemble of {fit.size} (members' spread and disagreement), "
        "fixed scale for every run"
    )
    return rp.uncertainty_layout(values, title=title)


def loss_picture(history: Sequence[dict], *, ylabel: str = "nats per pixel") -> np.ndarray:
    """The loss chart of an ensemble's history (one dict per epoch with `member_losses` `[M]`,
    None for a diverged epoch): one curve per member, and the ensemble's held-out NLL when the
    records hold `run_pictures.HELD_OUT_KEY`. Taller than a single run's chart when the legend
    needs it."""
    members = [h.get("member_losses") or [] for h in history]  # [epochs][M]
    count = max((len(losses) for losses in members), default=0)

    def curve(raw):
        return [np.nan if value is None else float(value) for value in raw]

    series = {
        f"member {m}": curve(losses[m] if m < len(losses) else None for losses in members)
        for m in range(count)
    }
    if any(h.get(rp.HELD_OUT_KEY) is not None for h in history):
        series["ensemble held-out NLL"] = curve(h.get(rp.HELD_OUT_KEY) for h in history)
    size = (640, max(400, 120 + 20 * len(series)))
    title = "training loss per epoch, each member"
    return media.line_chart(series, title=title, ylabel=ylabel, size=size)


NAMES = ("reconstructions.png", "uncertainty.png", "loss.png")


def write_pictures(
    out: str | os.PathLike, fit, images: np.ndarray, history: Sequence[dict]
) -> list[str]:
    """Write an ensemble run folder's pictures (`NAMES`) into `out`, each atomically; return the
    names of those that could not be made (skipped with one warning line each, see
    `mdn_jax.safe_outputs`). images: the training images `[N, H, W, 3]`; history: the run's."""
    out = Path(out)
    height, width = np.shape(images)[1:3]
    draw = {
        "reconstructions.png": lambda: reconstructions_picture(fit, images),
        "uncertainty.png": lambda: uncertainty_picture(fit, height=height, width=width),
        "loss.png": lambda: loss_picture(history),
    }
    return safe_outputs.write_each(
        {name: (lambda name=name: media.save_png(out / name, draw[name]())) for name in NAMES}
    )
