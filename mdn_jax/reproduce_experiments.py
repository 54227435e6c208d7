"""The experiments of `mdn-jax reproduce`, each defined once: its settings and what its
paragraph in the report says about it (see `mdn_jax.reproduce`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from mdn_jax import config as cfg
from mdn_jax import image_defaults, runs
from mdn_jax import model as mdl

REFERENCE_TRUNK = cfg.REFERENCE_TRUNK
FOURIER = dict(fourier_features=128, fourier_scale=3.0)
# The hash grid's training settings: those `mdn-jax train` uses on images (README: Input encodings).
HASHGRID_TRAIN = dict(
    batch_size=image_defaults.HASHGRID["batch_size"],
    learning_rate=image_defaults.HASHGRID["lr"],
    schedule=image_defaults.HASHGRID["schedule"],
    adam_b2=image_defaults.HASHGRID["adam_b2"],
    adam_eps=image_defaults.HASHGRID["adam_eps"],
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    """One row of the report, with what its paragraph says about it.

    images: how many of the images it trains on (0: all of them).
    model: overrides of `runs.image_model_config` (K, structure, trunk, Fourier features).
    loss: the training loss, 'nll' or 'discretised'.
    spread_init: start the component means spread over the data's colours, the head small
      (`runs.spread_init`).
    train: overrides of the report's training settings (batch 200, Adam 1e-3, constant), such
      as the hash grid's; a batch larger than the training pixels is cut to them.
    baseline: the experiment it is compared with in its paragraph.
    note: the paragraph's closing text: what this experiment shows; or a function of every
      experiment's metrics (`{name: metrics}`) that writes it.
    members: the experiments whose models this one trains side by side in ONE stacked call
      (`mdn_jax.stacked`, an ensemble run folder) instead of a model of its own; its paragraph
      sets its time against theirs and its members' scores beside theirs, and it has no row
      in the results table. Choosing it runs them too. `model` is unused.
    """

    name: str
    title: str
    images: int
    model: dict
    loss: str = "nll"
    spread_init: bool = False
    train: dict | None = None
    baseline: str | None = None
    note: str | Callable[[dict[str, dict]], str] = ""
    members: tuple[str, ...] = ()

    def closing(self, results: dict[str, dict]) -> str:
        return self.note(results) if callable(self.note) else self.note

    def trunk_text(self) -> str:
        """'[100, 100, 100, 100, 100, 50] reference + 128 Fourier', for the results table."""
        widths = tuple(self.model.get("hidden", REFERENCE_TRUNK))
        text = "[" + ", ".join(map(str, widths)) + "]"
        text += " reference" if widths == REFERENCE_TRUNK else ""
        if self.model.get("fourier_features"):
            text += f" + {self.model['fourier_features']} Fourier"
        if self.model.get("encoding") == "hashgrid":
            text += " + hash grid"
        return text


def _trunk_experiment(widths: tuple[int, ...]) -> Experiment:
    return Experiment(
        name="trunk_" + "_".join(map(str, widths)),
        title=f"trunk [2 inputs, {', '.join(map(str, widths))}]",
        images=0,
        model=dict(components=10, hidden=widths),
        baseline="joint_k10",
        note="The leading number is read as the width of the first hidden layer after the two "
        "inputs (the reference's lists start with it).",
    )


# The reference's three trunks, each list starting with the first hidden layer's width.
TRUNKS = (
    (2, 100, 100, 100, 100, 100, 50),
    (10, 100, 100, 100, 100, 100, 50),
    (10, 100, 200, 200, 200, 100, 100),
)


def _and(items: Sequence[str]) -> str:
    items = [f"`{i}`" for i in items]
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _combined_note(results: dict[str, dict]) -> str:
    """What the three improvements did together, and which of them helped alone."""
    alone = {
        n: results[n]["bits_per_channel"] < results["joint_k10"]["bits_per_channel"]
        for n in ("spread_init", "fourier", "discretised_loss")
        if n in results and "joint_k10" in results
    }
    text = (
        "The three improvements together: means that start spread over the colours, a position "
        "encoding that can draw sharp edges, and the loss that is the reported score."
    )
    if alone:
        text += (
            f" Alone, against the baseline, {_and([n for n, ok in alone.items() if ok]) or 'none'}"
            f" lowered bits per channel and "
            f"{_and([n for n, ok in alone.items() if not ok]) or 'none'} did not."
        )
    return text


# The experiments, in report order. 'joint_k10' is the baseline of every improvement.
EXPERIMENTS = (
    Experiment(
        name="one_image_k1",
        title="one image, one Gaussian per channel",
        images=1,
        model=dict(components=1),
        note="One Gaussian per channel is enough for one image: its mean is the image, so the "
        "coverage PSNR measures how sharp the trunk can draw it in this many epochs.",
    ),
    Experiment(
        name="two_images_k1",
        title="two images, one Gaussian",
        images=2,
        model=dict(components=1),
        baseline="two_images_k10",
        note="With two true colours at every position a single Gaussian can only sit between "
        "them: the mode render is the blurred average of the two images, and its variance has "
        "to grow to cover both, which is what the NLL pays for.",
    ),
    Experiment(
        name="two_images_k10",
        title="two images, 10 components (joint)",
        images=2,
        model=dict(components=10),
        baseline="two_images_k1",
        note="A mixture puts the two colours of a position in different components, so the "
        "closest component matches each image and the density is sharp again.",
    ),
    Experiment(
        name="per_dim_k10",
        title="all images, per_dim K=10, reference trunk (the reference's setup)",
        images=0,
        model=dict(components=10, structure="per_dim"),
        baseline="joint_k10",
        note="A separate mixture per channel cannot tie a red value to the green and blue "
        "values it came with: it spends likelihood on colour combinations that never occur.",
    ),
    Experiment(
        name="joint_k10",
        title="all images, joint K=10, reference trunk (Bishop; the baseline)",
        images=0,
        model=dict(components=10),
        baseline="per_dim_k10",
    ),
    *(_trunk_experiment(widths) for widths in TRUNKS),
    Experiment(
        name="trunks_stacked",
        title="the three trunks in one stacked call",
        images=0,
        model={},
        members=tuple(_trunk_experiment(widths).name for widths in TRUNKS),
        note="The reference compared its trunks in three separate runs. Stacked, the three "
        "train as one compiled program, each padded to the widest layer widths and masked, with "
        "the seed of its own run: the same models up to float rounding, which 25 or 300 epochs "
        "of training can grow into small differences in the scores. On an accelerator one "
        "call keeps the device busy where one small model leaves it idle; on a 2-core CPU that "
        "is already busy the gain is small or negative (benchmarks/stacked_throughput.py).",
    ),
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
        note="Training on the mass of each 8-bit bin optimises the reported score itself, "
        "instead of a continuous density that can buy likelihood with peaks narrower than the "
        "gap between two 8-bit levels (here the scale floor, 0.01, is 2.55 levels wide, so "
        "that gain is small).",
    ),
    Experiment(
        name="spread_init",
        title="baseline with means spread over the data, small head at the start",
        images=0,
        model=dict(components=10),
        spread_init=True,
        baseline="joint_k10",
        note="Means start at colours spread over the data by farthest-point sampling and the "
        f"head's weights at {runs.SPREAD_HEAD_SCALE:g} of their usual size, so every component "
        "starts on a real colour with near-uniform weights.",
    ),
    Experiment(
        name="hashgrid",
        title="hash-grid encoding, 64-64 trunk, its own training settings (`mdn-jax train`'s "
        "default on images)",
        images=0,
        model=dict(components=10, encoding="hashgrid", hidden=image_defaults.HASHGRID["hidden"]),
        spread_init=True,
        train=HASHGRID_TRAIN,
        baseline="joint_k10",
        note="A trainable multiresolution hash grid (8 levels x 4 features, 2^15 rows per level, "
        "16 to 256 cells per axis, `mdn_jax.hashgrid`) replaces the raw position, in front of a "
        "64-64 trunk, with spread means, trained with batch "
        f"{HASHGRID_TRAIN['batch_size']}, Adam {HASHGRID_TRAIN['learning_rate']:g} (beta2 "
        f"{HASHGRID_TRAIN['adam_b2']:g}, eps {HASHGRID_TRAIN['adam_eps']:g}) and a cosine decay: "
        "the settings `mdn-jax train` and `mdn-jax demo` use on images. An epoch is a few large "
        "steps instead of hundreds of small ones, so the same epochs take less time than the "
        "reference trunk (the seconds column).",
    ),
    Experiment(
        name="combined",
        title="all three improvements: spread means, Fourier features, discretised loss",
        images=0,
        model=dict(components=10, **FOURIER),
        loss="discretised",
        spread_init=True,
        baseline="joint_k10",
        note=_combined_note,
    ),
)


def experiments() -> list[Experiment]:
    """The experiments, in report order."""
    return list(EXPERIMENTS)


def names() -> list[str]:
    return [e.name for e in experiments()]


def model_config(experiment: Experiment, images: np.ndarray) -> mdl.ModelConfig:
    overrides = dict(experiment.model)
    if experiment.spread_init:
        overrides.update(runs.spread_init(images, overrides["components"]))
    return runs.image_model_config(**overrides)


def by_name(name: str) -> Experiment:
    return next(e for e in EXPERIMENTS if e.name == name)


def subset(experiment: Experiment, images: np.ndarray) -> np.ndarray:
    return images[: experiment.images] if experiment.images else images
