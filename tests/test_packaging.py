"""Packaging: license, py.typed, the version written once, declared dependencies and extras, and
the CLI pieces that depend on how mdn_jax is installed (--version, bench, train --config)."""

from __future__ import annotations

import contextlib
import io
import json
import tomllib
from importlib import metadata
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import mdn_jax
from mdn_jax import _version, cli, cli_commands

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TINY = [
    "--encoding",  # the reference settings, the default before the hash grid
    "identity",
    "--batch-size",
    "32",
    "--hidden",
    "8,8",
    "--components",
    "2",
    "--no-progress",
]


def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def test_license_file_matches_the_declared_license():
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_py_typed_ships_as_package_data():
    assert (ROOT / "mdn_jax" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["mdn_jax"]


def test_version_is_written_once_and_read_back():
    assert mdn_jax.__version__ == PYPROJECT["project"]["version"]
    sources = [
        p
        for p in (ROOT / "mdn_jax").rglob("*.py")
        if PYPROJECT["project"]["version"] in p.read_text()
    ]
    assert sources == [], sources  # no second copy of the number in the package


def test_version_outside_a_checkout_comes_from_metadata(monkeypatch, tmp_path):
    monkeypatch.setattr(_version, "_PYPROJECT", tmp_path / "pyproject.toml")  # not there
    monkeypatch.setattr(_version.metadata, "version", lambda name: f"9.8.7 of {name}")
    assert _version.version() == "9.8.7 of mdn_jax"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_version.metadata, "version", not_installed)
    assert _version.version() == "0+unknown"


def test_dependencies_and_extras():
    project = PYPROJECT["project"]
    assert any(d.lower().startswith("pillow") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    for name in ("cuda12", "cuda13", "tpu"):
        assert extras[name] == [f"jax[{name}]"]  # the jax floor is the dependencies' one alone
    assert extras["distrax"][0].startswith("distrax") and extras["numpyro"][0].startswith("numpyro")


def test_version_flag():
    code, out, err = _main("--version")
    assert code == 0 and out.strip() == f"mdn-jax {mdn_jax.__version__}", (out, err)


def test_bench_without_benchmarks_says_how_to_get_them(monkeypatch, tmp_path):
    """As after `pip install mdn_jax`: no benchmarks/ beside the package or in the folder."""
    fake = tmp_path / "site-packages" / "mdn_jax" / "__init__.py"
    monkeypatch.setattr(mdn_jax, "__file__", str(fake))
    monkeypatch.chdir(tmp_path)
    code, out, err = _main("bench")
    lines = [line for line in err.splitlines() if line.startswith("mdn-jax")]
    assert code == 2 and len(lines) == 1 and out == "", err
    assert "source checkout" in lines[0] and "benchmarks/" in lines[0]


def _recorded_train(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli_commands, "run_train", lambda args: seen.setdefault("args", args) and 0)
    return seen


def _config(tmp_path, **data):
    config = {
        "model": {
            "components": 7,
            "structure": "full",
            "hidden": [16, 4],
            "scale_floor": 0.02,
            "fourier_features": 8,
            "fourier_scale": 3.0,
            "dtype": "float32",
            "mean_init": [[0.1, 0.2, 0.3]] * 7,
            "head_init_scale": 0.1,
        },
        "train": {
            "epochs": 300,
            "batch_size": 64,
            "learning_rate": 0.003,
            "schedule": "cosine",
            "clip_norm": None,
            "seed": 5,
            "loss": "discretised",
            "on_nonfinite": "skip",
        },
        "run": {"frame_every": 4, "checkpoint_every": 9, "samples": 8, "progress": True},
        "data": {"source": ["a.png", "b.png"], "count": 2, "height": 12, "width": 10, **data},
        "devices": 4,
    }
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def test_train_config_repeats_the_settings_and_flags_override(monkeypatch, tmp_path):
    seen = _recorded_train(monkeypatch)
    path = _config(tmp_path)
    # --epochs 100 is also the default: an explicit flag wins even when it equals the default
    code, _, err = _main("train", "--config", path, "--out", tmp_path / "b", "--epochs", "100")
    assert code == 0, err
    args = seen["args"]
    assert args.inputs == ["a.png", "b.png"] and args.size == (12, 10)
    assert (args.components, args.structure, args.hidden) == (7, "full", (16, 4))
    assert (args.scale_floor, args.fourier_features, args.fourier_scale) == (0.02, 8, 3.0)
    assert (args.epochs, args.batch_size, args.lr, args.schedule) == (100, 64, 0.003, "cosine")
    assert (args.seed, args.loss, args.on_nonfinite, args.clip_norm) == (
        5,
        "discretised",
        "skip",
        None,
    )
    assert (args.frame_every, args.checkpoint_every, args.init) == (4, 9, "spread")
    assert args.devices is None  # the machine's, not the run's

    seen.clear()
    code, _, err = _main("train", "c.png", "--config", path.parent, "--out", "x", "--size", "4x4")
    assert code == 0, err
    assert seen["args"].inputs == ["c.png"] and seen["args"].size == (4, 4)


@pytest.mark.parametrize(
    "content, words",
    [
        (None, ["No such file", "run folder's config.json"]),
        ("not json", ["is not JSON"]),
        ("[1, 2]", ["has no model settings"]),
        ('{"model": {"components": 2}, "data": {"source": "demo"}}', ["names no image files"]),
        ('{"model": {"components": -2}}', ["--components"]),
    ],
)
def test_train_config_errors_are_one_line(tmp_path, content, words):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    args = ["train", "--config", path, "--out", tmp_path / "out"]
    code, out, err = _main(*args)
    lines = [line for line in err.splitlines() if line.startswith("mdn-jax")]
    assert code == 2 and len(lines) == 1 and out == "", err
    assert all(word in lines[0] for word in words), lines[0]


def test_train_without_images_or_config_keeps_its_error_line(tmp_path):
    code, _, err = _main("train", "--out", tmp_path / "out")
    assert code == 2
    assert err.strip() == (
        "mdn-jax: error: train: the following arguments are required: IMAGE_OR_FOLDER; "
        "see mdn-jax train --help"
    )


def test_train_config_round_trip(tmp_path):
    """A real run, then `train --config` of it: the same model and training settings."""
    for index in range(2):
        pixels = np.random.default_rng(index).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        iio.imwrite(tmp_path / f"{index}.png", pixels)
    first = tmp_path / "first"
    extra = ["--epochs", "1", "--seed", "3", "--schedule", "cosine", "--frame-every", "1"]
    code, _, err = _main(
        "train", tmp_path / "0.png", tmp_path / "1.png", *TINY, *extra, "--out", first
    )
    assert code == 0, err
    code, _, err = _main("train", "--config", first / "config.json", "--out", tmp_path / "second")
    assert code == 0, err
    was, now = (json.loads((tmp_path / n / "config.json").read_text()) for n in ("first", "second"))
    assert was["model"] == now["model"] and was["train"] == now["train"]
    assert was["data"] == now["data"] and was["run"] == now["run"]
