"""`mdn-jax reproduce`: the reference experiments and what a careful MDN adds, in one report.

Every experiment is an ordinary run folder, `DIR/runs/<name>/` (see `mdn_jax.runs`), trained on
the first 1, 2 or all of the images. `DIR/report.md` gathers their scores in one table, with each
experiment's mode render and a small montage GIF (`DIR/report_files/`), a paragraph per
experiment written from its numbers, and the comparisons the reference example is about, each
stated with the figures behind it and whether this run confirms it.

Running the same command again continues: finished experiments are read back, an interrupted one
resumes from its last checkpoint, so nothing is lost on a crash or Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mdn_jax import checkpoint as ckpt
from mdn_jax import media, runs
from mdn_jax import model as mdl
from mdn_jax import train as tr

REFERENCE_TRUNK = (100, 100, 100, 100, 100, 50)
DEFAULT_EPOCHS = 25
FULL_EPOCHS = 300  # the reference's
FOURIER = dict(fourier_features=128, fourier_scale=3.0)
REPORT_FRAMES = 12  # frames in each report GIF


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    """One row of the report.

    images: how many of the images it trains on (0: all of them).
    model: overrides of `runs.image_model_config` (K, structure, trunk, Fourier features).
    loss: the training loss, 'nll' or 'discretised'.
    spread_init: start the component means spread over the data's colours, the head small
      (`runs.spread_init`).
    baseline: the experiment it is compared with in its paragraph.
    """

    name: str
    title: str
    images: int
    model: dict
    loss: str = "nll"
    spread_init: bool = False
    baseline: str | None = None


def experiments() -> list[Experiment]:
    """The experiments, in report order. 'joint_k10' is the baseline of every improvement."""

    def trunk(widths):
        return Experiment(
            name="trunk_" + "_".join(map(str, widths)),
            title=f"trunk [2 inputs, {', '.join(map(str, widths))}]",
            images=0,
            model=dict(components=10, hidden=widths),
            baseline="joint_k10",
        )

    return [
        Experiment(
            name="one_image_k1",
            title="one image, one Gaussian per channel",
            images=1,
            model=dict(components=1),
        ),
        Experiment(
            name="two_images_k1",
            title="two images, one Gaussian",
            images=2,
            model=dict(components=1),
            baseline="two_images_k10",
        ),
        Experiment(
            name="two_images_k10",
            title="two images, 10 components (joint)",
            images=2,
            model=dict(components=10),
            baseline="two_images_k1",
        ),
        Experiment(
            name="per_dim_k10",
            title="all images, per_dim K=10, reference trunk (the reference's setup)",
            images=0,
            model=dict(components=10, structure="per_dim"),
            baseline="joint_k10",
        ),
        Experiment(
            name="joint_k10",
            title="all images, joint K=10, reference trunk (Bishop; the baseline)",
            images=0,
            model=dict(components=10),
            baseline="per_dim_k10",
        ),
        trunk((2, 100, 100, 100, 100, 100, 50)),
        trunk((10, 100, 100, 100, 100, 100, 50)),
        trunk((10, 100, 200, 200, 200, 100, 100)),
        Experiment(
            name="fourier",
            title=f"baseline + {FOURIER['fourier_features']} Fourier features "
            f"(scale {FOURIER['fourier_scale']:g})",
            images=0,
            model=dict(components=10, **FOURIER),
            baseline="joint_k10",
        ),
        Experiment(
            name="discretised_loss",
            title="baseline trained on the discretised (bits) loss",
            images=0,
            model=dict(components=10),
            loss="discretised",
            baseline="joint_k10",
        ),
        Experiment(
            name="spread_init",
            title="baseline with means spread over the data, small head at the start",
            images=0,
            model=dict(components=10),
            spread_init=True,
            baseline="joint_k10",
        ),
        Experiment(
            name="combined",
            title="all three improvements: spread means, Fourier features, discretised loss",
            images=0,
            model=dict(components=10, **FOURIER),
            loss="discretised",
            spread_init=True,
            baseline="joint_k10",
        ),
    ]


def names() -> list[str]:
    return [e.name for e in experiments()]


def model_config(experiment: Experiment, images: np.ndarray) -> mdl.ModelConfig:
    overrides = dict(experiment.model)
    if experiment.spread_init:
        overrides.update(runs.spread_init(images, overrides["components"]))
    return runs.image_model_config(**overrides)


def _subset(experiment: Experiment, images: np.ndarray) -> np.ndarray:
    return images[: experiment.images] if experiment.images else images


def _finished(run_dir: Path, epochs: int, config: mdl.ModelConfig, loss: str) -> dict | None:
    """The metrics of a finished run of exactly this experiment in run_dir, else None."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    same = (
        saved.get("model") == json.loads(json.dumps(config.to_dict()))
        and saved.get("train", {}).get("loss") == loss
        and saved.get("train", {}).get("epochs") == epochs
    )
    # metrics.json is written before the pictures: a run stopped between them is not finished
    pictured = (run_dir / "final_mode.png").is_file()
    if same and pictured and metrics.get("epochs") == epochs and not metrics.get("interrupted"):
        return metrics
    return None


def run(
    images: np.ndarray,
    out: str | Path,
    *,
    epochs: int = DEFAULT_EPOCHS,
    only: Sequence[str] | None = None,
    source: str = "built-in demo images",
    command: str = "mdn-jax reproduce",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run the experiments on `images [N, H, W, 3]` (N >= 2) into `out`; returns the report path.

    Stops early (raising KeyboardInterrupt) when a run is interrupted with Ctrl-C; the report is
    then not written, and running again continues where it stopped.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(
            f"reproduce needs at least two images (the experiments compare one, two and all), "
            f"got {images.shape[0] if images.ndim == 4 else 0}; pass two or more images"
        )
    chosen = [e for e in experiments() if only is None or e.name in only]
    unknown = sorted(set(only or ()) - set(names()))
    if unknown:
        raise ValueError(
            f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(names())}"
        )
    if not chosen:
        raise ValueError(f"--only names no experiment; choose from {', '.join(names())}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; pass a folder path as --out")
    train_config = tr.TrainConfig(epochs=epochs, batch_size=200, learning_rate=1e-3, seed=0)
    for experiment in chosen:  # fail fast on every setting before training anything
        pixels = _subset(experiment, images)[..., 0].size
        if pixels < train_config.batch_size:
            raise ValueError(
                f"{experiment.name} would train on {pixels} pixels, fewer than the batch size "
                f"{train_config.batch_size}; use a larger --size (at least "
                f"{train_config.batch_size // max(1, experiment.images or len(images)) + 1} pixels per image)"
            )
    options = runs.RunOptions(
        frame_every=max(1, epochs // REPORT_FRAMES),
        checkpoint_every=max(5, epochs // 5),
        samples=4,
        progress=progress,
    )
    results: dict[str, dict] = {}
    started, reused = time.perf_counter(), 0
    for index, experiment in enumerate(chosen, 1):
        subset = _subset(experiment, images)
        config = model_config(experiment, subset)
        experiment_train = dataclasses.replace(train_config, loss=experiment.loss)
        run_dir = out / "runs" / experiment.name
        log(f"[{index}/{len(chosen)}] {experiment.name}: {experiment.title}")
        metrics = _finished(run_dir, epochs, config, experiment.loss)
        if metrics is not None:
            log(f"  already finished in {run_dir}; reusing it")
            reused += 1
        else:
            resume = ckpt.latest_epoch(run_dir / "checkpoint") is not None
            metrics = runs.train_on_images(
                subset,
                run_dir,
                model_config=config,
                train_config=experiment_train,
                options=options,
                resume=resume,
                log=lambda line: log("  " + line),
                data_info={
                    "source": source,
                    "count": len(subset),
                    "height": int(subset.shape[1]),
                    "width": int(subset.shape[2]),
                },
            )
            if metrics.get("interrupted"):
                raise KeyboardInterrupt(
                    f"{experiment.name} interrupted; run the same command again to continue"
                )
        results[experiment.name] = metrics
        log(
            f"  NLL {metrics['nll_nats']:.3f} nats/pixel, {metrics['bits_per_channel']:.3f} bits/channel, coverage "
            f"PSNR {_psnrs(metrics['coverage_psnr'])} dB"
        )
    files = out / "report_files"
    for experiment in chosen:
        _report_files(out / "runs" / experiment.name, files, experiment.name)
    minutes = (time.perf_counter() - started) / 60
    timing = f"This invocation took {minutes:.1f} minutes of wall-clock time, reports included" + (
        f"; {reused} of the {len(chosen)} experiments were read back from an earlier invocation."
        if reused
        else f" ({len(chosen)} experiments)."
    )
    text = report(
        chosen, results, images=images, epochs=epochs, source=source, command=command, timing=timing
    )
    path = out / "report.md"
    media.atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
    log(f"wrote {path}")
    return path


def _report_files(run_dir: Path, files: Path, name: str) -> None:
    """The mode render and a smaller montage GIF (at most REPORT_FRAMES frames, half size)."""
    import imageio.v3 as iio

    mode = iio.imread(run_dir / "final_mode.png")
    media.save_png(files / f"{name}_mode.png", mode)
    frames = sorted((run_dir / "frames").glob("epoch_*.png"))
    if len(frames) > REPORT_FRAMES:  # keep the first and last, evenly spaced between
        frames = [
            frames[i] for i in np.linspace(0, len(frames) - 1, REPORT_FRAMES).round().astype(int)
        ]
    small = [np.asarray(iio.imread(f)[..., :3][::2, ::2], np.float32) / 255.0 for f in frames]
    media.save_gif(files / f"{name}_montage.gif", small, seconds_per_frame=0.4)


def _psnrs(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def _trunk(config: dict) -> str:
    widths = config["hidden"]
    text = "[" + ", ".join(map(str, widths)) + "]"
    return text + (" reference" if tuple(widths) == REFERENCE_TRUNK else "")


def _verdict(ok: bool | None) -> str:
    return {True: "**yes**", False: "**no**", None: "not run"}[ok]


def _findings(results: dict[str, dict]) -> list[str]:
    """The comparisons the reference example makes, each with its numbers and whether they hold."""
    lines = []
    r = results

    def mean(values):
        return float(np.mean(values))

    if "two_images_k1" in r and "two_images_k10" in r:
        a, b = r["two_images_k1"], r["two_images_k10"]
        ok = (
            b["nll_nats"] < a["nll_nats"]
            and mean(b["coverage_psnr"]) > mean(a["coverage_psnr"])
            and b["bits_per_channel"] < a["bits_per_channel"]
        )
        lines.append(
            f"- K=1 on two images is clearly worse than K=10 on the same two: NLL {a['nll_nats']:.3f} vs "
            f"{b['nll_nats']:.3f} nats/pixel, {a['bits_per_channel']:.3f} vs {b['bits_per_channel']:.3f} "
            f"bits/channel, coverage PSNR {_psnrs(a['coverage_psnr'])} vs {_psnrs(b['coverage_psnr'])} dB. "
            f"{_verdict(ok)}"
        )
    else:
        lines.append(f"- K=1 vs K=10 on two images: {_verdict(None)}")
    if "per_dim_k10" in r and "joint_k10" in r:
        a, b = r["per_dim_k10"], r["joint_k10"]
        lines.append(
            f"- joint beats per_dim on bits per channel on all images: {b['bits_per_channel']:.3f} vs "
            f"{a['bits_per_channel']:.3f}. {_verdict(b['bits_per_channel'] < a['bits_per_channel'])}"
        )
    else:
        lines.append(f"- joint vs per_dim: {_verdict(None)}")
    if "fourier" in r and "joint_k10" in r:
        a, b = r["joint_k10"], r["fourier"]
        lines.append(
            f"- Fourier features improve bits per channel at the same epoch budget: {b['bits_per_channel']:.3f} "
            f"vs {a['bits_per_channel']:.3f} (coverage PSNR {_psnrs(b['coverage_psnr'])} vs "
            f"{_psnrs(a['coverage_psnr'])} dB). {_verdict(b['bits_per_channel'] < a['bits_per_channel'])}"
        )
    else:
        lines.append(f"- Fourier features vs the baseline: {_verdict(None)}")
    many = {n: m for n, m in r.items() if not n.startswith(("one_", "two_"))}
    if many:
        best = min(many, key=lambda n: many[n]["bits_per_channel"])
        worst = min(many[best]["coverage_psnr"])
        lines.append(
            f"- the best configuration on all images (lowest bits per channel: `{best}`, "
            f"{many[best]['bits_per_channel']:.3f}) reaches a coverage PSNR of at least 25 dB on every image: "
            f"{_psnrs(many[best]['coverage_psnr'])} dB. {_verdict(worst >= 25.0)}"
        )
    return lines


def _thirty_db(results: dict[str, dict], epochs: int) -> str:
    many = {n: m for n, m in results.items() if not n.startswith(("one_", "two_"))}
    if not many:
        return "No experiment on all images ran."
    reached = sorted(n for n, m in many.items() if min(m["coverage_psnr"]) >= 30.0)
    lowest = {n: min(m["coverage_psnr"]) for n, m in many.items()}
    text = (
        "Lowest per-image coverage PSNR of each run: "
        + ", ".join(f"`{n}` {v:.1f} dB" for n, v in sorted(lowest.items(), key=lambda kv: -kv[1]))
        + ". "
    )
    if reached:
        text += f"At {epochs} epochs, {', '.join(f'`{n}`' for n in reached)} reach 30 dB on every image. "
    else:
        text += f"At {epochs} epochs no run reaches 30 dB on every image. "
    missed = {n: m for n, m in many.items() if n not in reached}
    if missed:
        text += (
            "The runs that miss it: "
            + "; ".join(
                f"`{n}` on image {int(np.argmin(m['coverage_psnr'])) + 1} ({min(m['coverage_psnr']):.1f} dB), "
                f"{(m.get('history') or [{}])[-1].get('unused_components', '?')} unused components at the end"
                for n, m in sorted(missed.items())
            )
            + ". "
        )
    text += (
        "A run misses 30 dB when an image's colours at some pixels have no component near them: the "
        "closest component PSNR of that image drops while the others stay high, and unused components "
        "are the sign that the mixture had capacity it did not place there. The levers this report "
        "tries are the rows above: means that start spread over the colours (`spread_init`), Fourier "
        "features so the trunk can draw edges (`fourier`) and wider trunks (the `trunk_*` rows, which "
        "cost more per epoch); compare each with `joint_k10`. Beyond those, train longer "
        "(`--epochs N`, or `--full` for the reference's 300 epochs). Component PSNR (does one component hold a whole image?) "
        "stays far below coverage PSNR in every run: the likelihood lets components split the colours "
        "of a position between them rather than give each image a component of its own, because "
        "nothing in the loss asks for the latter."
    )
    return text


def _and(items: Sequence[str]) -> str:
    items = [f"`{i}`" for i in items]
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _paragraph(experiment: Experiment, metrics: dict, results: dict[str, dict]) -> str:
    m = metrics
    history = m.get("history") or [{}]
    last = history[-1]
    parts = [
        f"NLL {m['nll_nats']:.3f} nats/pixel and {m['bits_per_channel']:.3f} bits/channel after "
        f"{m['epochs']} epochs; coverage PSNR {_psnrs(m['coverage_psnr'])} dB, component PSNR "
        f"{_psnrs(m['component_psnr'])} dB."
    ]
    if "effective_components" in last:
        parts.append(
            f"At the end {last['effective_components']:.1f} effective components, "
            f"{last['unused_components']} of {experiment.model['components']} never the most probable, "
            f"{100 * last['scales_at_floor']:.0f}% of scales at the floor."
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
    if experiment.name == "one_image_k1":
        parts.append(
            "One Gaussian per channel is enough for one image: its mean is the image, so the "
            "coverage PSNR measures how sharp the trunk can draw it in this many epochs."
        )
    elif experiment.name == "two_images_k1":
        parts.append(
            "With two true colours at every position a single Gaussian can only sit between them: "
            "the mode render is the blurred average of the two images, and its variance has to grow "
            "to cover both, which is what the NLL pays for."
        )
    elif experiment.name == "two_images_k10":
        parts.append(
            "A mixture puts the two colours of a position in different components, so the closest "
            "component matches each image and the density is sharp again."
        )
    elif experiment.name == "per_dim_k10":
        parts.append(
            "A separate mixture per channel cannot tie a red value to the green and blue values it "
            "came with: it spends likelihood on colour combinations that never occur."
        )
    elif experiment.name.startswith("trunk_"):
        parts.append(
            "The leading number is read as the width of the first hidden layer after the two inputs "
            "(the reference's lists start with it)."
        )
    elif experiment.name == "combined":
        alone = {
            n: results[n]["bits_per_channel"] < results["joint_k10"]["bits_per_channel"]
            for n in ("spread_init", "fourier", "discretised_loss")
            if n in results and "joint_k10" in results
        }
        parts.append(
            "The three improvements together: means that start spread over the colours, a position "
            "encoding that can draw sharp edges, and the loss that is the reported score."
            + (
                f" Alone, against the baseline, {_and([n for n, ok in alone.items() if ok]) or 'none'} "
                f"lowered bits per channel and {_and([n for n, ok in alone.items() if not ok]) or 'none'} "
                "did not."
                if alone
                else ""
            )
        )
    elif experiment.name == "spread_init":
        parts.append(
            f"Means start at colours spread over the data by farthest-point sampling and the head's "
            f"weights at {runs.SPREAD_HEAD_SCALE:g} of their usual size, so every component starts on a "
            f"real colour with near-uniform weights."
        )
    elif experiment.loss == "discretised":
        parts.append(
            "Training on the mass of each 8-bit bin optimises the reported score itself, instead of a "
            "continuous density that can buy likelihood with peaks narrower than the gap between two "
            "8-bit levels (here the scale floor, 0.01, is 2.55 levels wide, so that gain is small)."
        )
    return " ".join(parts)


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
    """The report's markdown."""
    first = next(iter(results.values()))
    n, height, width = images.shape[:3]
    lines = [
        "# mdn_jax reproduce report",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()}: {n} images ({source}) of "
        f"{height}x{width} pixels, {epochs} epochs per experiment, batch 200, Adam 1e-3, seed 0, ReLU trunk, "
        f"scale floor 0.01. Device `{first.get('device')}`; "
        + ", ".join(f"{k} {v}" for k, v in (first.get("versions") or {}).items())
        + ". "
        + timing,
        "",
        "Scores: NLL is the continuous negative log-likelihood in nats per pixel (all three channels); "
        "bits/channel is the discretised 8-bit likelihood, the honest score for image data; coverage PSNR "
        "(per image) is the PSNR of the closest component mean at each pixel; component PSNR (per image) "
        "the best PSNR of any single component. Seconds are training time summed over epochs (the first "
        "includes compilation); samples/s is the median epoch's. Each row is one training run with seed 0: "
        "this report does not measure how much rows move with the seed, so read small differences with care.",
        "",
        "## What it shows",
        "",
        *_findings(results),
        "",
        "## Results",
        "",
        "| experiment | images | structure, K | trunk | loss | NLL (nats) | bits/ch | coverage PSNR (dB) | "
        "component PSNR (dB) | epochs | seconds | samples/s | mode render | training (GIF) |",
        "|---|---:|---|---|---|---:|---:|---|---|---:|---:|---:|---|---|",
    ]
    for e in chosen:
        m = results[e.name]
        structure = e.model.get("structure", "joint")
        trunk = _trunk({"hidden": e.model.get("hidden", REFERENCE_TRUNK)})
        if e.model.get("fourier_features"):
            trunk += f" + {e.model['fourier_features']} Fourier"
        count = e.images or n
        lines.append(
            f"| `{e.name}` | {count} | {structure}, {e.model['components']} | {trunk} | {e.loss} | "
            f"{m['nll_nats']:.3f} | {m['bits_per_channel']:.3f} | {_psnrs(m['coverage_psnr'])} | "
            f"{_psnrs(m['component_psnr'])} | {m['epochs']} | {m['seconds']:.0f} | "
            f"{(m['samples_per_second'] or 0) / 1e3:.0f}k | "
            f"![mode](report_files/{e.name}_mode.png) | ![montage](report_files/{e.name}_montage.gif) |"
        )
    lines += ["", "## Experiments", ""]
    for e in chosen:
        lines += [f"### `{e.name}`: {e.title}", "", _paragraph(e, results[e.name], results), ""]
    lines += [
        "## What it would take to reach 30 dB",
        "",
        _thirty_db(results, epochs),
        "",
        "## Where mdn_jax differs from the reference code",
        "",
        "The reference (TensorFlow 1) used ReLU on means and standard deviations with a 1e-10 floor, "
        "multiplied probabilities in linear space with a `log(p + 1)` loss, and one softmax across all "
        "channels' weights. Here every experiment computes the likelihood in log space (log_softmax, "
        "logsumexp), keeps standard deviations positive with softplus plus a floor of 0.01, leaves means "
        "unbounded, and per_dim has one softmax per channel. The run folders under `runs/` hold every "
        "checkpoint, frame and metric behind this table; `mdn-jax render runs/<name> ...` renders any "
        "of them at any size.",
        "",
    ]
    return "\n".join(lines)
