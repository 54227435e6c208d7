"""The image defaults of `mdn-jax train` and `demo` follow the encoding (mdn_jax.image_defaults),
and Adam's beta2 and epsilon are training settings (TrainConfig.adam_b2, adam_eps)."""

from __future__ import annotations

import numpy as np
import optax
import pytest

from mdn_jax import cli, config, image_defaults, repeat, step


def _parse(*flags):
    return cli.build_parser().parse_args(["train", "x.png", "--out", "run", *flags])


@pytest.mark.parametrize("command", ["train", "demo"])
def test_hashgrid_is_the_image_default_with_its_settings(command):
    rest = ["x.png", "--out", "run"] if command == "train" else []
    args = image_defaults.resolve(cli.build_parser().parse_args([command, *rest]))
    assert args.encoding == "hashgrid"
    assert (args.hidden, args.batch_size, args.lr, args.schedule, args.init) == (
        (64, 64),
        4096,
        1e-2,
        "cosine",
        "spread",
    )
    assert (args.adam_b2, args.adam_eps) == (0.99, 1e-15)
    assert args.epochs == 60  # train's 100 reference epochs, demo's 60: at most 60 with a grid


@pytest.mark.parametrize(
    "flags, encoding",
    [
        (["--encoding", "identity"], "identity"),
        (["--fourier-features", "16"], "fourier"),  # as before the hash grid: Fourier alone
        (["--encoding", "fourier", "--fourier-features", "16"], "fourier"),
    ],
)
def test_identity_and_fourier_keep_the_reference_settings(flags, encoding):
    args = image_defaults.resolve(_parse(*flags))
    train = config.TrainConfig()
    assert args.encoding == encoding and args.hidden == config.REFERENCE_TRUNK
    assert (args.batch_size, args.lr, args.schedule, args.init) == (
        train.batch_size,
        train.learning_rate,
        train.schedule,
        "random",
    )
    assert (args.adam_b2, args.adam_eps) == (train.adam_b2, train.adam_eps)
    assert args.epochs == 100  # `mdn-jax train`'s, as before the hash grid


def test_explicit_flags_win_over_the_encodings_defaults():
    args = image_defaults.resolve(
        _parse("--hidden", "32", "--batch-size", "64", "--lr", "3e-3", "--init", "random"),
        pixels=10_000,
    )
    assert (args.encoding, args.hidden, args.batch_size, args.lr, args.init) == (
        "hashgrid",
        (32,),
        64,
        3e-3,
        "random",
    )
    assert args.schedule == "cosine"  # the one left out still follows the encoding


def test_small_images_cap_the_hashgrid_default_batch():
    assert image_defaults.resolve(_parse(), pixels=300).batch_size == 300
    assert image_defaults.resolve(_parse(), pixels=10**6).batch_size == 4096
    assert image_defaults.resolve(_parse("--batch-size", "8"), pixels=4).batch_size == 8
    args = image_defaults.resolve(_parse("--encoding", "identity"), pixels=100)
    assert args.batch_size == 200  # the reference's batch check stays as it was


def test_repeat_says_the_init_either_way():
    model = config.ModelConfig().to_dict()
    flags = repeat.config_flags({"model": model, "train": config.TrainConfig().to_dict()})
    assert flags[flags.index("--init") + 1] == "random"
    assert flags[flags.index("--adam-b2") + 1] == "0.999"


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.5, float("nan"), True, "0.9"])
def test_adam_b2_must_lie_in_the_open_unit_interval(value):
    with pytest.raises(ValueError, match="adam_b2 must be a number in"):
        config.TrainConfig(adam_b2=value)


def test_adam_settings_reach_the_optimiser():
    params = {"w": np.ones(3, np.float32)}
    grads = {"w": np.array([1.0, 0.0, -2.0], np.float32)}
    for b2, eps in ((0.999, 1e-8), (0.99, 1e-15)):
        train = config.TrainConfig(adam_b2=b2, adam_eps=eps)
        ours = step.make_optimizer(train, total_steps=10)
        theirs = optax.adam(train.learning_rate, b2=b2, eps=eps)
        state_a, state_b = ours.init(params), theirs.init(params)
        for _ in range(3):
            update_a, state_a = ours.update(grads, state_a, params)
            update_b, state_b = theirs.update(grads, state_b, params)
            np.testing.assert_allclose(update_a["w"], update_b["w"], rtol=1e-6)
    with pytest.raises(SystemExit):
        _parse("--adam-b2", "1")


def test_reproduce_has_a_hashgrid_row_with_the_image_defaults():
    from mdn_jax import data, reproduce, reproduce_experiments

    (hashgrid,) = [e for e in reproduce_experiments.experiments() if e.name == "hashgrid"]
    images = data.demo_images(count=2, size=16)
    model = reproduce_experiments.model_config(hashgrid, images)
    assert model.encoding == "hashgrid" and model.hidden == image_defaults.HASHGRID["hidden"]
    assert model.mean_init is not None  # spread means, as `mdn-jax train` starts them
    assert "hash grid" in hashgrid.trunk_text()
    report = config.TrainConfig(epochs=3, batch_size=200, learning_rate=1e-3)
    trained = reproduce._training(hashgrid, report, pixels=10**6)
    assert (trained.batch_size, trained.learning_rate, trained.schedule) == (4096, 1e-2, "cosine")
    assert (trained.adam_b2, trained.adam_eps, trained.epochs) == (0.99, 1e-15, 3)
    assert reproduce._training(hashgrid, report, pixels=512).batch_size == 512
    (reference,) = [e for e in reproduce_experiments.experiments() if e.name == "joint_k10"]
    assert reproduce._training(reference, report, pixels=512) == report  # unchanged


def test_resume_without_flags_keeps_a_reference_run_as_it_was_trained(tmp_path):
    """A run started with the reference settings (the default before the hash grid) resumes with
    no --encoding: the defaults follow the run's stored encoding, not today's default."""
    import contextlib
    import io
    import json

    import imageio.v3 as iio

    pixels = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", pixels)
    common = ["--hidden", "8", "--components", "2", "--batch-size", "16", "--no-progress"]
    common += ["--frame-every", "0", "--out", str(tmp_path / "run")]

    def main(*flags):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return cli.main(["train", str(tmp_path / "a.png"), *flags, *common]), err.getvalue()

    assert main("--epochs", "1", "--encoding", "identity")[0] == 0
    code, err = main("--epochs", "2", "--resume")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["encoding"] == "identity" and saved["train"]["adam_b2"] == 0.999
    assert image_defaults.stored_encoding(tmp_path / "run") == "identity"
    code, err = main("--epochs", "3", "--resume", "--adam-b2", "0.9")  # another optimiser
    assert code == 2 and "other settings" in err and "adam_b2" in err, err
    assert image_defaults.stored_encoding(tmp_path / "nothing") is None
