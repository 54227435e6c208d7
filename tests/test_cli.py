"""The `mdn-jax` command: one-line errors with exit code 2 and no output, a run folder end to
end, resume.

A few cases run the CLI in a real subprocess (`python -m mdn_jax.cli`); the rest call
`mdn_jax.cli.main([...])` in-process (same parser, same handlers, same error handling), which
saves a JAX import and lets compiled functions be reused across runs.
"""

import argparse
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys

import imageio.v3 as iio
import jax
import numpy as np
import pytest

from mdn_jax import checkpoint, cli, media

TINY = [
    "--encoding",  # the reference settings, the default before the hash grid
    "identity",
    "--batch-size",
    "32",
    "--hidden",
    "8,8",
    "--components",
    "2",
    "--frame-every",
    "1",
    "--no-progress",
]
METHODS = ("mode", "mean", "sample", "component", "uncertainty", "components")

# Lines some JAX/absl/XLA builds print on stderr by themselves; not ours, so not counted.
_NOISE = re.compile(r"^(WARNING:|[WIEF]\d{4} |An NVIDIA GPU may be present|.*absl::InitializeLog)")


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not _NOISE.match(line)]


def _assert_error(code, stderr, *words):
    """Exit 2 and exactly one stderr line `mdn-jax: error: ...` containing every word."""
    lines = _lines(stderr)
    assert code == 2, (code, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mdn-jax: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def _assert_usage_error(code, stderr, flag, command="train"):
    """A flag error: exit 2 and one line naming the command and the flag, and pointing to --help."""
    assert code == 2, (code, stderr)
    lines = _lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"mdn-jax: error: {command}: argument {flag}"), lines[0]
    assert lines[0].endswith(f"see mdn-jax {command} --help"), lines[0]


def _subprocesses(cwd, commands):
    """Run `python -m mdn_jax.cli ARGS` for each ARGS at once; [(exit code, stderr), ...]."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mdn_jax.cli", *map(str, args)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for process in processes:
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        results.append((process.returncode, err))
    return results


def _main(*args):
    """`cli.main` in-process: (exit code, stdout, stderr); argparse's SystemExit becomes the
    code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def _png(path, height=8, width=8, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    iio.imwrite(path, pixels)
    return path


def _snapshot(folder):
    """Every file under `folder` with its bytes, to show a refused command changed nothing."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


# ---------------------------------------------------------------------------------------------
# Real subprocesses: the module entry point, stderr as the user sees it.


def test_subprocess_errors_are_one_line_with_exit_2(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "text.png").write_text("not an image at all\n")
    (tmp_path / "notarun").mkdir()
    # started together so their JAX imports overlap
    text, components, render = _subprocesses(
        tmp_path,
        [
            ("train", "text.png", "--out", "run"),
            ("train", "ok.png", "--components", "0", "--out", "run"),
            ("render", "notarun", "--out", "x.png"),
        ],
    )
    _assert_error(*text, "text.png", "not a readable image", "PNG")
    _assert_usage_error(*components, "--components")
    assert not (tmp_path / "run").exists()
    _assert_error(*render, "notarun", "checkpoint", "train first")
    assert not (tmp_path / "x.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notarun", "ok.png", "text.png"]
    assert not any((tmp_path / "notarun").iterdir())


# ---------------------------------------------------------------------------------------------
# In-process: argument and data errors of train.


@pytest.fixture
def inputs(tmp_path):
    _png(tmp_path / "one.png")
    (tmp_path / "zero.png").write_bytes(b"")
    _png(tmp_path / "mixed" / "a.png", 8, 8, seed=1)
    _png(tmp_path / "mixed" / "b.png", 6, 10, seed=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("I am a file")
    return tmp_path


@pytest.mark.parametrize(
    "args, words",
    [
        (["missing.png"], ("missing.png", "no such file", "check the path")),
        (["zero.png"], ("zero.png", "empty", "0 bytes", "replace")),
        (["mixed"], ("different sizes", "a.png 8x8", "b.png 6x10", "--size")),
        (["empty"], ("empty", "no image files", "add images")),
        (
            ["one.png", "--batch-size", "100000"],
            ("batch size 100000", "64 training pixels", "--batch-size 64"),
        ),
    ],
    ids=["missing", "zero-bytes", "mixed-sizes", "empty-folder", "batch-too-big"],
)
def test_train_data_errors(inputs, args, words):
    out = inputs / "run"
    code, _, err = _main(
        "train",
        *[str(inputs / a) if i == 0 else a for i, a in enumerate(args)],
        "--out",
        out,
        "--epochs",
        "1",
        "--no-progress",
    )
    _assert_error(code, err, *words)
    assert not out.exists()


def test_train_image_over_the_pixel_limit(inputs, monkeypatch):
    """The decompression-bomb guard (tests/test_data.py) as the command shows it; the limit is
    lowered here so that an 8x8 image trips it."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    code, _, err = _main("train", inputs / "one.png", "--out", inputs / "run", "--epochs", "1")
    _assert_error(
        code, err, "one.png", "8x8 is 64 pixels", "more than the 50", "shrink the file first"
    )
    assert not (inputs / "run").exists()


def test_train_out_is_a_file(inputs):
    code, _, err = _main(
        "train", inputs / "one.png", "--out", inputs / "afile", "--batch-size", "8"
    )
    _assert_error(code, err, "afile", "is a file", "--out")
    assert (inputs / "afile").read_text() == "I am a file"


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--components", "0"),
        ("--lr", "-1"),
        ("--lr", "0"),
        ("--lr", "nan"),
        ("--hidden", "10,abc"),
        ("--size", "0x5"),
        ("--size", "8x8x8"),
        ("--structure", "diag"),
        ("--epochs", "0"),
        ("--batch-size", "two"),
        ("--dtype", "float16"),
        ("--devices", "0"),
    ],
)
def test_train_flag_errors_name_the_flag(inputs, flag, value):
    out = inputs / "run"
    code, _, err = _main("train", inputs / "one.png", "--out", out, flag, value)
    _assert_usage_error(code, err, flag)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["--devices", "2"],
            (
                "--devices 2",
                "1 cpu device",
                "--devices 1 or less",
                "xla_force_host_platform_device_count=2",
            ),
        ),
        (
            ["--coordinator", "localhost:1234"],
            ("--coordinator needs --num-processes and --process-id",),
        ),
        (
            ["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"],
            ("--process-id 2 must be below --num-processes 2",),
        ),
    ],
    ids=["more-devices-than-there-are", "coordinator-alone", "process-id-too-big"],
)
def test_device_and_process_flag_errors(inputs, args, words):
    """Refused in one line before JAX starts a distributed runtime or anything is written."""
    out = inputs / "run"
    code, _, err = _main(
        "train",
        inputs / "one.png",
        "--out",
        out,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--no-progress",
        *args,
    )
    _assert_error(code, err, *words)
    assert not out.exists()


def _subcommands():
    parser = cli.build_parser()
    return sorted(
        next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    )


def test_help_exits_0_for_every_subcommand():
    commands = _subcommands()
    assert {"demo", "train", "render"} <= set(commands)
    for command in [None, *commands]:
        code, out, _ = _main(*([command] if command else []), "--help")
        assert code == 0, command
        assert out.startswith(f"usage: mdn-jax{' ' + command if command else ''}"), command


# ---------------------------------------------------------------------------------------------
# A trained run: the folder, every render, render errors, resume.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    images = [_png(root / "a.png", seed=3), _png(root / "b.png", seed=4)]
    code, out, err = _main("train", *images, "--epochs", "3", *TINY, "--out", root / "run")
    assert code == 0, err
    assert _lines(err) == [], err
    return root, out


def test_train_writes_complete_run_folder(trained):
    root, stdout = trained
    run = root / "run"
    assert "wrote" in stdout and "montage.gif" in stdout
    for name in (
        "config.json",
        "metrics.json",
        "montage.gif",
        "final_mode.png",
        "components.png",
        "samples.png",
        "uncertainty.png",
        "loss.png",
    ):
        assert (run / name).is_file(), name
    assert (run / "checkpoint").is_dir() and checkpoint.latest_epoch(run / "checkpoint") == 3
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["components"] == 2 and config["model"]["hidden"] == [8, 8]
    assert (
        config["data"]["height"] == 8
        and config["data"]["width"] == 8
        and config["data"]["count"] == 2
    )
    metrics = _metrics(run)
    for key in (
        "nll_nats",
        "component_psnr",
        "coverage_psnr",
        "samples_per_second",
        "epochs",
        "seconds",
        "device",
    ):
        assert key in metrics, key
    assert np.isfinite(metrics["nll_nats"])
    assert len(metrics["component_psnr"]) == 2 and len(metrics["coverage_psnr"]) == 2
    assert metrics["epochs"] == 3 and len(metrics["history"]) == 3
    assert metrics["samples_per_second"] > 0 and metrics["seconds"] > 0 and metrics["device"]
    assert iio.imread(run / "montage.gif", index=None).shape[0] == 3
    assert iio.imread(run / "final_mode.png").shape[:2] == (8, 8)
    for name in ("components.png", "samples.png", "uncertainty.png", "loss.png"):
        assert iio.imread(run / name).ndim == 3, name
    leftovers = [
        str(p) for p in run.rglob("*") if p.name.startswith(".") or "tmp" in p.name.lower()
    ]
    assert leftovers == []


def test_render_every_method(trained):
    root, _ = trained
    for method in METHODS:
        out = root / f"render_{method}.png"
        code, stdout, err = _main(
            "render", root / "run", "--method", method, "--samples", "3", "--out", out
        )
        assert code == 0 and _lines(err) == [], (method, err)
        assert "wrote" in stdout
        image = iio.imread(out)
        if method == "sample":
            assert image.shape == media.grid([np.zeros((8, 8, 3))] * 3).shape
        elif method != "components":
            assert image.shape == (8, 8, 3), method
    code, _, err = _main(
        "render", root / "run", "--method", "mean", "--size", "16x20", "--out", root / "big.png"
    )
    assert code == 0, err
    assert iio.imread(root / "big.png").shape == (16, 20, 3)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_render_errors(trained):
    root, _ = trained
    code, _, err = _main(
        "render",
        root / "run",
        "--method",
        "component",
        "--component",
        "99",
        "--out",
        root / "c99.png",
    )
    _assert_error(code, err, "--component 99", "0..1")
    code, _, err = _main("render", root / "run", "--out", root / "x.jpg")
    _assert_error(code, err, "x.jpg", ".png")
    code, _, err = _main("render", root / "run", "--method", "fancy", "--out", root / "f.png")
    _assert_usage_error(code, err, "--method", command="render")
    code, _, err = _main(
        "render", root / "run", "--size", "20000x20000", "--out", root / "huge.png"
    )
    _assert_error(code, err, "20000x20000", "400,000,000 pixels", "89,478,485", "smaller --size")
    code, _, err = _main(
        "render",
        root / "run",
        "--method",
        "sample",
        "--samples",
        "1000",
        "--size",
        "400x400",
        "--out",
        root / "many.png",
    )
    _assert_error(code, err, "1000 samples of 400x400", "fewer --samples")
    assert not [
        p
        for p in root.iterdir()
        if p.name in ("c99.png", "x.jpg", "f.png", "huge.png", "many.png") or p.name.startswith(".")
    ]


@pytest.fixture(scope="module")
def resumed(trained):
    """A copy of the 3-epoch run, resumed to epoch 5."""
    root, _ = trained
    shutil.copytree(root / "run", root / "resumed")
    code, out, err = _main(
        "train",
        root / "a.png",
        root / "b.png",
        "--epochs",
        "5",
        *TINY,
        "--out",
        root / "resumed",
        "--resume",
    )
    assert code == 0, err
    assert "resuming" in out
    return root / "resumed"


def test_resume_continues_to_later_epoch(resumed):
    metrics = _metrics(resumed)
    assert metrics["epochs"] == 5
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4, 5]
    assert checkpoint.latest_epoch(resumed / "checkpoint") == 5
    assert iio.imread(resumed / "montage.gif", index=None).shape[0] == 5


@pytest.mark.parametrize(
    "extra, words",
    [
        (
            ["--resume", "--components", "3"],
            ("other settings", "components 2 (now 3)", "new --out"),
        ),
        (["--resume", "--schedule", "cosine"], ("other settings", "schedule", "new --out")),
        (["--resume", "--clip-norm", "1"], ("other settings", "clip_norm", "new --out")),
        (
            ["--resume", "--dtype", "bfloat16"],
            ("other settings", "dtype 'float32' (now 'bfloat16')", "new --out"),
        ),
        (
            [],
            ("already holds a trained run", "--resume"),
        ),  # a fresh run must not clobber a trained one
    ],
    ids=["components", "schedule", "clip-norm", "dtype", "no-resume"],
)
def test_refused_resume_changes_nothing(trained, resumed, extra, words):
    root, _ = trained
    before = _snapshot(resumed)
    # argparse keeps the last of a repeated flag, so `extra` overrides TINY
    code, _, err = _main(
        "train", root / "a.png", root / "b.png", "--epochs", "6", *TINY, *extra, "--out", resumed
    )
    _assert_error(code, err, *words)
    assert _snapshot(resumed) == before


def test_resume_without_checkpoint_refused(tmp_path):
    code, _, err = _main(
        "train",
        _png(tmp_path / "a.png"),
        "--epochs",
        "2",
        *TINY,
        "--out",
        tmp_path / "fresh",
        "--resume",
    )
    _assert_error(code, err, "no checkpoint", "without --resume")
    assert not (tmp_path / "fresh").exists()


def test_resume_equals_uninterrupted(trained, resumed):
    """3 epochs, then --resume to 5 == 5 epochs straight: bit-identical params and optimiser
    state."""
    root, _ = trained
    code, _, err = _main(
        "train", root / "a.png", root / "b.png", "--epochs", "5", *TINY, "--out", root / "straight"
    )
    assert code == 0, err
    a, b = (
        checkpoint.restore(resumed / "checkpoint"),
        checkpoint.restore(root / "straight" / "checkpoint"),
    )
    assert a.epoch == b.epoch == 5
    for x, y in zip(
        jax.tree.leaves((a.state.params, a.state.opt_state, a.state.step)),
        jax.tree.leaves((b.state.params, b.state.opt_state, b.state.step)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(
        jax.random.key_data(a.state.key), jax.random.key_data(b.state.key)
    )
    assert [h["loss"] for h in _metrics(resumed)["history"]] == [
        h["loss"] for h in _metrics(root / "straight")["history"]
    ]


def test_mixed_sizes_train_with_size_flag(tmp_path):
    root = tmp_path
    _png(root / "mixed" / "a.png", 8, 8, seed=5)
    _png(root / "mixed" / "b.png", 6, 10, seed=6)
    code, out, err = _main(
        "train", root / "mixed", "--size", "8x8", "--epochs", "1", *TINY, "--out", root / "sized"
    )
    assert code == 0, err  # one epoch: a one-frame montage GIF
    assert "2 image(s) of 8x8" in out
    assert iio.imread(root / "sized" / "final_mode.png").shape[:2] == (8, 8)


def test_one_frame_montage_gif(tmp_path):
    """`train --epochs 1` makes a one-frame montage: Pillow's writer needs a single duration
    then."""
    media.save_gif(tmp_path / "one.gif", [np.zeros((4, 4, 3))])
    assert iio.imread(tmp_path / "one.gif", index=0).shape[:2] == (4, 4)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    """SIGINT during training: the epoch finishes, a checkpoint and all outputs are written,
    the exit code is 130, and --resume continues from there."""
    import signal
    import time

    _png(tmp_path / "a.png", seed=1)
    command = [
        sys.executable,
        "-m",
        "mdn_jax.cli",
        "train",
        "a.png",
        "--epochs",
        "100000",
        *TINY,
        "--frame-every",
        "0",
        "--checkpoint-every",
        "0",
        "--out",
        "run",
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first_frame = tmp_path / "run" / "frames" / "epoch_00001.png"
    deadline = time.time() + 120
    while not first_frame.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert first_frame.exists(), "training never finished its first epoch"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: checkpoint saved at epoch" in stdout and "--resume" in stdout
    values = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert values["interrupted"] is True and 1 <= values["epochs"] < 100000
    assert checkpoint.latest_epoch(tmp_path / "run" / "checkpoint") == values["epochs"]
    for name in (
        "montage.gif",
        "final_mode.png",
        "components.png",
        "samples.png",
        "uncertainty.png",
        "loss.png",
    ):
        assert (tmp_path / "run" / name).exists(), name
    code, out, err = _main(
        "train",
        tmp_path / "a.png",
        "--epochs",
        str(values["epochs"] + 1),
        *TINY,
        "--resume",
        "--out",
        tmp_path / "run",
    )
    assert code == 0, err
    assert _metrics(tmp_path / "run")["epochs"] == values["epochs"] + 1


def test_render_out_is_a_folder_and_stale_frames_are_cleared(trained, tmp_path):
    root, _ = trained
    (tmp_path / "folder.png").mkdir()
    code, _, err = _main("render", root / "run", "--out", tmp_path / "folder.png")
    _assert_error(code, err, "folder")
    # A fresh run into a folder whose earlier run never checkpointed starts its montage afresh.
    run = tmp_path / "fresh"
    (run / "frames").mkdir(parents=True)
    media.save_png(run / "frames" / "epoch_00007.png", np.zeros((30, 30, 3)))
    _png(tmp_path / "a.png", seed=3)
    code, _, err = _main("train", tmp_path / "a.png", "--epochs", "2", *TINY, "--out", run)
    assert code == 0, err
    assert sorted(p.name for p in (run / "frames").iterdir()) == [
        "epoch_00001.png",
        "epoch_00002.png",
    ]


def test_resume_with_another_batch_size_is_refused(trained, tmp_path):
    root, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(root / "run", copy)
    before = _snapshot(copy)
    code, _, err = _main(
        "train",
        root / "a.png",
        root / "b.png",
        "--epochs",
        "9",
        *TINY[2:],
        "--batch-size",
        "16",
        "--resume",
        "--out",
        copy,
    )
    _assert_error(code, err, "batch_size")
    assert _snapshot(copy) == before


def test_non_finite_training_stops_with_one_line_and_keeps_the_checkpoint(tmp_path):
    _png(tmp_path / "a.png", seed=5)
    run = tmp_path / "run"
    code, _, err = _main("train", tmp_path / "a.png", "--epochs", "2", *TINY, "--out", run)
    assert code == 0, err
    before = checkpoint.latest_epoch(run / "checkpoint")
    code, _, err = _main(
        "train",
        tmp_path / "a.png",
        "--epochs",
        "4",
        *TINY,
        "--lr",
        "1e30",
        "--resume",
        "--out",
        run,
    )
    lines = _lines(err)
    assert code == 3 and len(lines) == 1, err
    assert lines[0].startswith("mdn-jax: error: non-finite loss or gradient in epoch 3")
    assert "checkpoint of epoch 2 is kept" in lines[0] and "--resume" in lines[0]
    assert checkpoint.latest_epoch(run / "checkpoint") == before == 2
    code, _, err = _main(
        "train",
        tmp_path / "a.png",
        "--epochs",
        "4",
        *TINY,
        "--lr",
        "1e30",
        "--resume",
        "--on-nonfinite",
        "skip",
        "--out",
        run,
    )
    assert code == 0, err
    history = _metrics(run)["history"]
    assert history[-1]["epoch"] == 4 and history[-1]["skipped_steps"] >= 1


def test_one_pixel_images_in_a_non_ascii_folder(tmp_path):
    """1x1 images from, and a run folder and render in, folders named in several scripts: trained,
    then rendered at its size and larger."""
    folder = tmp_path / "Bilder äöü 图像"
    for seed in range(3):
        _png(folder / f"ß{seed}.png", 1, 1, seed=seed)
    run, out = folder / "lauf ü", tmp_path / "Ausgabe é" / "ß.png"
    code, _, err = _main("train", folder, "--epochs", "2", *TINY, "--out", run)
    _assert_error(code, err, "batch size 32", "3 training pixels", "--batch-size 3")
    code, stdout, err = _main(
        "train", folder, "--epochs", "2", *TINY, "--batch-size", "3", "--out", run
    )
    assert code == 0, err
    assert "3 image(s) of 1x1 (3 pixels)" in stdout and str(run) in stdout
    assert checkpoint.latest_epoch(run / "checkpoint") == 2
    assert iio.imread(run / "final_mode.png").shape == (1, 1, 3)
    assert iio.imread(run / "montage.gif", index=None).shape[0] == 2
    assert np.isfinite(_metrics(run)["nll_nats"])
    assert json.loads((run / "config.json").read_text())["data"]["source"][0].endswith("ß0.png")
    for size, shape in ((None, (1, 1, 3)), ("5x7", (5, 7, 3))):
        code, _, err = _main("render", run, *(["--size", size] if size else []), "--out", out)
        assert code == 0, err
        assert iio.imread(out).shape == shape
