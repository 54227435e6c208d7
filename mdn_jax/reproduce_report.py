"""The markdown of `mdn-jax reproduce`'s report: findings, results table, a paragraph per
experiment and what it would take to reach 30 dB, written from the experiments' metrics.

`results` everywhere is `{experiment name: the metrics dict of its run folder}`
(`mdn_jax.runs.finish`); experiments are `mdn_jax.reproduce_experiments.Experiment`s. The
findings and the 30 dB section are written by `mdn_jax.reproduce_findings`.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mdn_jax.reproduce_findings import findings, psnrs, thirty_db

if TYPE_CHECKING:
    from mdn_jax.reproduce_experiments import Experiment


def summary_line(experiment: Experiment, metrics: dict) -> str:
    """One line of progress after an experiment: its scores (a stacked one: its members')."""
    m = metrics
    if experiment.members:
        bits = " / ".join(f"{member['bits_per_channel']:.3f}" for member in m["members"])
        return (
            f"{len(m['members'])} members in one call, {m['seconds']:.0f} s: {bits} "
            f"bits/channel; the ensemble {m['ensemble']['bits_per_channel']:.3f}"
        )
    return (
        f"NLL {m['nll_nats']:.3f} nats/pixel, {m['bits_per_channel']:.3f} bits/channel, "
        f"coverage PSNR {psnrs(m['coverage_psnr'])} dB"
    )


def _steady_epoch(history: list[dict]) -> float | None:
    """Median seconds of an epoch after the first (which compiles); None with one epoch."""
    later = [h["seconds"] for h in history[1:] if "seconds" in h]
    return float(np.median(later)) if later else None


def _stacked_paragraph(experiment: Experiment, results: dict[str, dict]) -> str:
    """Its time against its members' separate runs, and each member's scores beside theirs."""
    m = results[experiment.name]
    separate = [results.get(name) for name in experiment.members]
    count = len(experiment.members)
    text = f"{count} models in one compiled call: {m['seconds']:.0f} s of training"
    if all(separate):
        total = sum(r["seconds"] for r in separate)
        text += (
            f", against {total:.0f} s for the {count} separate runs ({total / m['seconds']:.2f}x "
            "as fast"
        )
        stacked, alone = (
            _steady_epoch(m["history"]),
            [_steady_epoch(r["history"]) for r in separate],
        )
        if stacked and all(alone):
            text += (
                f"; an epoch after the first, which compiles, {stacked:.2f} s against "
                f"{sum(alone):.2f} s: {sum(alone) / stacked:.2f}x as fast"
            )
        text += ")"
    scores = []
    for name, member, own in zip(experiment.members, m["members"], separate, strict=True):
        line = (
            f"`{name}` {member['bits_per_channel']:.3f} bits/channel, NLL {member['nll_nats']:.3f}"
        )
        if own:
            line += f" (its own run: {own['bits_per_channel']:.3f}, {own['nll_nats']:.3f})"
        scores.append(line)
    ensemble = m["ensemble"]
    parts = [
        text + ".",
        "Its members: " + "; ".join(scores) + ".",
        f"The {count} as an ensemble, one mixture of all their components (weights 1/{count} "
        f"each, `mdn_jax.combine_members`): {ensemble['bits_per_channel']:.3f} bits/channel, NLL "
        f"{ensemble['nll_nats']:.3f}.",
    ]
    closing = experiment.closing(results)
    return " ".join(parts + ([closing] if closing else []))


def _paragraph(experiment: Experiment, metrics: dict, results: dict[str, dict]) -> str:
    m = metrics
    history = m.get("history") or [{}]
    last = history[-1]
    parts = [
        f"NLL {m['nll_nats']:.3f} nats/pixel and {m['bits_per_channel']:.3f} bits/channel after "
        f"{m['epochs']} epochs; coverage PSNR {psnrs(m['coverage_psnr'])} dB, component PSNR "
        f"{psnrs(m['component_psnr'])} dB."
    ]
    if "effective_components" in last:
        parts.append(
            f"At the end {last['effective_components']:.1f} effective components, "
            f"{last['unused_components']} of {experiment.model['components']} never the most "
            f"probable, {100 * last['scales_at_floor']:.0f}% of scales at the floor."
        )
    other = results.get(experiment.baseline) if experiment.baseline else None
    if other is not None:
        delta_bits = m["bits_per_channel"] - other["bits_per_channel"]
        delta_cov = float(np.mean(m["coverage_psnr"]) - np.mean(other["coverage_psnr"]))
        parts.append(
            f"Against `{experiment.baseline}`: {delta_bits:+.3f} bits/channel "
            f"({'better' if delta_bits < 0 else 'worse'}), {delta_cov:+.1f} dB mean coverage PSNR, "
            f"{m['seconds'] / max(other['seconds'], 1e-9):.2f}x the training time."
        )
    closing = experiment.closing(results)
    if closing:
        parts.append(closing)
    return " ".join(parts)


# The report's closing section: what the reference code did that these experiments do not.
DIFFERENCES = (
    "The reference (TensorFlow 1) used ReLU on means and standard deviations with a 1e-10 floor, "
    "multiplied probabilities in linear space with a `log(p + 1)` loss, and one softmax across all "
    "channels' weights. Here every experiment computes the likelihood in log space (log_softmax, "
    "logsumexp), keeps standard deviations positive with softplus plus a floor of 0.01, leaves "
    "means unbounded, and per_dim has one softmax per channel. The run folders under `runs/` hold "
    "every checkpoint, frame and metric behind this table; `mdn-jax render runs/<name> ...` "
    "renders any of them at any size."
)


def report(
    chosen: Sequence[Experiment],
    results: dict[str, dict],
    *,
    images: np.ndarray,
    epochs: int,
    source: str,
    command: str,
    timing: str = "",
) -> str:
    """The report's markdown. Stacked experiments (`Experiment.members`) have a paragraph but
    no row, and take no part in the findings: they retrain other rows' models."""
    first = next(iter(results.values()))
    stacked = {e.name for e in chosen if e.members}
    rows = [e for e in chosen if not e.members]
    plain = {name: metrics for name, metrics in results.items() if name not in stacked}
    n, height, width = images.shape[:3]
    lines = [
        "# mdn_jax reproduce report",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()}: {n} images ({source}) of "
        f"{height}x{width} pixels, {epochs} epochs per experiment, batch 200, Adam 1e-3, seed 0, "
        f"ReLU trunk, scale floor 0.01. Device `{first.get('device')}`; "
        + ", ".join(f"{k} {v}" for k, v in (first.get("versions") or {}).items())
        + ". "
        + timing,
        "",
        "Scores: NLL is the continuous negative log-likelihood in nats per pixel (all three "
        "channels); bits/channel is the discretised 8-bit likelihood, the honest score for image "
        "data; coverage PSNR (per image) is the PSNR of the closest component mean at each pixel; "
        "component PSNR (per image) the best PSNR of any single component. Seconds are training "
        "time summed over epochs (the first includes compilation); samples/s is the median "
        "epoch's. Each row is one training run with seed 0: this report does not measure how much "
        "rows move with the seed, so read small differences with care.",
        "",
        "## What it shows",
        "",
        *findings(plain),
        "",
        "## Results",
        "",
        *_table(rows, plain, images=n),
    ]
    lines += ["", "## Experiments", ""]
    for e in chosen:
        text = (
            _stacked_paragraph(e, results) if e.members else _paragraph(e, results[e.name], results)
        )
        lines += [f"### `{e.name}`: {e.title}", "", text, ""]
    lines += [
        "## What it would take to reach 30 dB",
        "",
        thirty_db(plain, epochs),
        "",
        "## Where mdn_jax differs from the reference code",
        "",
        DIFFERENCES,
        "",
    ]
    return "\n".join(lines)


def _table(chosen: Sequence[Experiment], results: dict[str, dict], *, images: int) -> list[str]:
    """The results table's lines: a header and one row per experiment."""
    lines = [
        "| experiment | images | structure, K | trunk | loss | NLL (nats) | bits/ch | "
        "coverage PSNR (dB) | component PSNR (dB) | epochs | seconds | samples/s | mode render | "
        "training (GIF) |",
        "|---|---:|---|---|---|---:|---:|---|---|---:|---:|---:|---|---|",
    ]
    for e in chosen:
        m = results[e.name]
        structure = e.model.get("structure", "joint")
        lines.append(
            f"| `{e.name}` | {e.images or images} | {structure}, {e.model['components']} | "
            f"{e.trunk_text()} | {e.loss} | {m['nll_nats']:.3f} | {m['bits_per_channel']:.3f} | "
            f"{psnrs(m['coverage_psnr'])} | {psnrs(m['component_psnr'])} | {m['epochs']} | "
            f"{m['seconds']:.0f} | {(m['samples_per_second'] or 0) / 1e3:.0f}k | "
            f"![mode](report_files/{e.name}_mode.png) | "
            f"![montage](report_files/{e.name}_montage.gif) |"
        )
    return lines
