"""Scores of a stacked fit's members and of their ensemble on data (`mdn_jax.ensemble_runs`).

The ensemble is the members' mixtures combined with weights 1/M, so its log density at y is the
log-mean-exp over members of theirs; its NLL is never worse than the members' average.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import discretised, stacked
from mdn_jax import mixture as mx


@jax.jit
def _pixel_scores(log_likelihoods, log_masses):
    """Per-member and ensemble sums of `[M, C]` log likelihoods and log masses."""
    count = jnp.log(log_likelihoods.shape[0])
    ensemble = [jax.nn.logsumexp(a, axis=0) - count for a in (log_likelihoods, log_masses)]
    return log_likelihoods.sum(1), log_masses.sum(1), ensemble[0].sum(), ensemble[1].sum()


def scores(fit: stacked.StackedFit, xs, ys, *, held_out=None, chunk: int = 16384) -> dict:
    """`{"ensemble": {...}, "members": [...]}`: NLL (nats per pixel) and bits per channel of
    every member and of the ensemble on `xs [N, 2]`, `ys [N, 3]` (and `held_out_nll` on
    `held_out = (xs, ys)`)."""
    totals = np.zeros(4, object)
    for start in range(0, len(xs), chunk):
        x, y = jnp.asarray(xs[start : start + chunk]), jnp.asarray(ys[start : start + chunk])
        mixture = fit.predict(x)  # batch [M, C]
        parts = _pixel_scores(mx.log_prob(mixture, y), discretised.discretised_log_prob(mixture, y))
        totals = totals + np.array([np.asarray(p, np.float64) for p in parts], object)
    pixels, bits = len(xs), len(xs) * ys.shape[1] * np.log(2.0)
    members = [
        {"nll_nats": float(-ll / pixels), "bits_per_channel": float(-lm / bits)}
        for ll, lm in zip(totals[0], totals[1])
    ]
    ensemble = {
        "members": fit.size,
        "nll_nats": float(-totals[2] / pixels),
        "bits_per_channel": float(-totals[3] / bits),
    }
    if held_out is not None:
        inner = scores(fit, *held_out, chunk=chunk)
        ensemble["held_out_nll"] = inner["ensemble"]["nll_nats"]
        for member, other in zip(members, inner["members"]):
            member["held_out_nll"] = other["nll_nats"]
    for member, model, train in zip(members, fit.model_configs, fit.train_configs):
        member.update(hidden=list(model.hidden), scale_floor=model.scale_floor)
        member.update(learning_rate=train.learning_rate, seed=train.seed)
    return {"ensemble": ensemble, "members": members}
