"""Operating mdn_jax as training jobs are run (issue 16): one writer per run folder, preemption by
SIGTERM, render while training, full disks, pictures that cannot be made, phone photos, and the
smaller boundary checks; and a randomized soak of kills and resumes.

As in tests/test_faults.py, what happens in the field happens here: real `mdn-jax` processes,
real signals, a real full filesystem (a small tmpfs, where this machine lets us mount one; an
injected ENOSPC otherwise). The child processes share a persistent JAX compilation cache.
"""

import contextlib
import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdn_jax
from mdn_jax import checkpoint, cli, data, media, render, runlock, safe_outputs, signals, train

TINY = [
    "--encoding",  # the reference settings, the default before the hash grid
    "identity",
    "--hidden",
    "16,16",
    "--components",
    "2",
    "--batch-size",
    "32",
    "--no-progress",
]
_NOISE = re.compile(r"^(WARNING:|[WIEF]\d{4} |An NVIDIA GPU may be present|.*absl::InitializeLog)")


def _lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not _NOISE.match(line)]


def _main(*args):
    """`cli.main` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def _assert_one_line_error(code, stderr, *words, exit_code=2):
    lines = _lines(stderr)
    assert code == exit_code and len(lines) == 1, (code, stderr)
    assert lines[0].startswith("mdn-jax: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def _environment(cache):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(
        # the session's cache (tests/conftest.py) where there is one: shared with the tests
        JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return env


def _start(root, args):
    return subprocess.Popen(
        [sys.executable, "-m", "mdn_jax.cli", *map(str, args)],
        cwd=root,
        env=_environment(root / "cache"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process, timeout=300):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, out, err


def _wait_for(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _leaves(run):
    state = checkpoint.restore(run / "checkpoint").state
    return [np.asarray(x) for x in jax.tree.leaves((state.params, state.opt_state, state.step))]


def _assert_same_run(a, b):
    """Same epoch, bit-identical params, optimiser state and step, same loss history."""
    ra, rb = checkpoint.restore(a / "checkpoint"), checkpoint.restore(b / "checkpoint")
    assert ra.epoch == rb.epoch
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert [h["loss"] for h in ra.history] == [h["loss"] for h in rb.history]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("operations")
    for seed in (1, 2):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        iio.imwrite(root / f"{seed}.png", pixels)
    return root


def _train(root, run, *extra):
    return ["train", root / "1.png", root / "2.png", *TINY, "--out", root / run, *extra]


# ---------------------------------------------------------------------------------------------
# One writer per run folder; render while training; SIGTERM (items 1, 2, 3).


def test_second_writer_is_refused_render_reads_while_training_and_sigterm_saves(root):
    """A run trains with a checkpoint every epoch (so Orbax deletes one every epoch). Meanwhile a
    second `train` on its folder, fresh or `--resume`, gets one line naming the running process
    and exit 2, and changes nothing; `render` reads the newest complete checkpoint every time.
    Then SIGTERM, as SLURM or Kubernetes send it: checkpoint, metrics.json and every picture,
    exit 143, the lock released."""
    run = root / "busy"
    flags = ("--epochs", "100000", "--checkpoint-every", "1", "--frame-every", "0")
    process = _start(root, _train(root, "busy", *flags))
    try:
        _wait_for(lambda: checkpoint.latest_epoch(run / "checkpoint") is not None)
        holder = json.loads((run / runlock.LOCK_NAME).read_text())
        assert holder["pid"] == process.pid
        config, frames = (run / "config.json").read_bytes(), sorted((run / "frames").iterdir())
        for extra in ([], ["--resume"]):
            code, _, err = _main(*_train(root, "busy", "--epochs", "3", *extra))
            _assert_one_line_error(code, err, str(run), f"process {process.pid}", "is in use")
        for index in range(6):
            code, _, err = _main("render", run, "--out", root / f"during_{index}.png")
            assert code == 0, err
            assert iio.imread(root / f"during_{index}.png").shape == (8, 8, 3)
        assert (run / "config.json").read_bytes() == config
        assert sorted((run / "frames").iterdir()) == frames
        assert json.loads((run / runlock.LOCK_NAME).read_text()) == holder
        assert process.poll() is None  # untouched by all that
        process.send_signal(signal.SIGTERM)
        code, out, err = _finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 128 + signal.SIGTERM, err
    stopped = checkpoint.latest_epoch(run / "checkpoint")
    assert f"interrupted: checkpoint saved at epoch {stopped}; continue with --resume" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["epochs"] == stopped
    assert all((run / name).is_file() for name in safe_outputs.NAMES)
    assert not (run / runlock.LOCK_NAME).exists()


def test_stop_flag_takes_sigterm_like_ctrl_c():
    with signals.StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and signals.exit_code() == 143
        with pytest.raises(KeyboardInterrupt):  # a second signal aborts at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with signals.StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and signals.exit_code() == 130


def test_lock_of_a_dead_process_is_taken_over_and_a_live_one_is_not(tmp_path):
    """A lock file left by a killed process (the kernel dropped its flock) is taken over; one
    held by a live process is refused, naming it; a folder the refused call created is removed."""
    run = tmp_path / "run"
    run.mkdir()
    (run / runlock.LOCK_NAME).write_text('{"pid": 999999, "host": "gone", "time": 0}')
    with runlock.hold(run):
        holder = json.loads((run / runlock.LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from mdn_jax import runlock\nwith runlock.hold({str(run)!r}): pass",
            ],
            capture_output=True,
            text=True,
        )
        assert other.returncode == 1
        assert other.stderr.strip().splitlines()[-1].startswith("mdn_jax.runlock.RunLockedError")
        assert f"process {os.getpid()} on " in other.stderr
    assert not (run / runlock.LOCK_NAME).exists()
    with runlock.hold(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / runlock.LOCK_NAME).is_file()
    assert not (tmp_path / "new" / "run").exists()


# ---------------------------------------------------------------------------------------------
# Randomized soak: SIGKILL or SIGTERM at random moments, resumed each time.

SOAK_FLAGS = ("--epochs", "12", "--checkpoint-every", "2", "--frame-every", "3")
SOAK_RENDERS = ("final_mode.png", "components.png", "samples.png", "uncertainty.png")


def test_soak_random_kills_and_resumes_end_bit_identical(root):
    """A run stopped three times, each by SIGKILL or SIGTERM (drawn at random) after a random
    delay (start-up, training, a checkpoint or the pictures), and restarted each time as a user
    would (`--resume` once a checkpoint exists), ends bit-identical to an uninterrupted run."""
    seed = int(os.environ.get("MDN_JAX_SOAK_SEED", time.time_ns() % 2**31))
    rng = np.random.default_rng(seed)
    reference = _start(root, _train(root, "soak_reference", *SOAK_FLAGS))
    run, events = root / "soak", []
    for _ in range(3):
        resume = ["--resume"] if checkpoint.latest_epoch(run / "checkpoint") is not None else []
        process = _start(root, _train(root, "soak", *SOAK_FLAGS, *resume))
        delay, signum = float(rng.uniform(0.5, 5.0)), rng.choice([signal.SIGKILL, signal.SIGTERM])
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signum)
        code, _, err = _finish(process)
        events.append((round(delay, 2), signal.Signals(signum).name, code))
        assert code in (0, -signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM), (
            seed,
            events,
            err,
        )
        if code == 128 + signal.SIGTERM:  # handled: the checkpoint of the epoch it stopped at
            stopped = json.loads((run / "metrics.json").read_text())["epochs"]
            assert checkpoint.latest_epoch(run / "checkpoint") == stopped, (seed, events)
    resume = ["--resume"] if checkpoint.latest_epoch(run / "checkpoint") is not None else []
    code, _, err = _finish(_start(root, _train(root, "soak", *SOAK_FLAGS, *resume)))
    assert code == 0, (seed, events, err)
    code, _, err = _finish(reference)
    assert code == 0, err
    _assert_same_run(run, root / "soak_reference")
    for name in SOAK_RENDERS:
        assert (run / name).read_bytes() == (root / "soak_reference" / name).read_bytes(), name
    assert not list(run.rglob("*.orbax-checkpoint-tmp")) and not (run / runlock.LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------
# A full disk (item 4).


@contextlib.contextmanager
def _small_disk(folder, size):
    """A tmpfs of `size` mounted on `folder`, or None where this machine cannot mount one."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_real_full_disk_gives_one_line_keeps_the_checkpoint_and_resume_finishes(root):
    """`--out` on a 200 KB filesystem: the run fills it. One line (no Orbax traceback) naming the
    folder, the free space and the fix; the previous checkpoint restores; no temporary is left.
    With room made, `--resume` finishes the run."""
    with _small_disk(root / "disk", "200k") as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here; test_injected_full_disk_* covers the paths")
        run = disk / "run"
        flags = ("--epochs", "40", "--checkpoint-every", "1", "--frame-every", "1")
        code, _, err = _finish(_start(root, _train(root, run, *flags)))
        kept = checkpoint.latest_epoch(run / "checkpoint")
        assert kept is not None and kept < 40, err
        _assert_one_line_error(
            code,
            err,
            f"the disk holding {run} is full",
            "free",
            f"checkpoint of epoch {kept} is kept",
        )
        assert checkpoint.restore(run / "checkpoint").epoch == kept
        assert not list(run.rglob("*.orbax-checkpoint-tmp")) and not list(run.rglob(".*.tmp*"))
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        code, _, err = _finish(_start(root, _train(root, run, *flags, "--resume")))
        assert code == 0, err
        assert checkpoint.latest_epoch(run / "checkpoint") == 40


def _full_disk_at(what, epoch):
    """A stand-in for a write that meets a full disk, as each writer reports it."""
    if what == "checkpoint":  # tensorstore, through Orbax
        original = checkpoint.save

        def save(directory, **kwargs):
            if kwargs["epoch"] == epoch:
                (directory / f"{epoch}.orbax-checkpoint-tmp").mkdir(parents=True)
                raise ValueError(
                    "RESOURCE_EXHAUSTED: Error writing in OCDBT database: No space left on device"
                )
            return original(directory, **kwargs)

        return checkpoint, "save", save
    original = media.atomic_write

    def atomic_write(path, write):
        name = f"epoch_{epoch:05d}.png" if what == "frame" else what
        if os.path.basename(path) == name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, write)

    return media, "atomic_write", atomic_write


@pytest.mark.parametrize(
    "what, epoch, kept",
    [("checkpoint", 4, 2), ("frame", 3, 2), ("metrics.json", 0, 4), ("montage.gif", 0, 4)],
)
def test_injected_full_disk_gives_one_line_at_every_writer(
    root, tmp_path, monkeypatch, what, epoch, kept
):
    """Where no tmpfs can be mounted, and for each writer: a full disk met by the checkpoint
    (Orbax's RESOURCE_EXHAUSTED), a frame, metrics.json or the GIF (ENOSPC) gives the one line."""
    run = tmp_path / "run"
    monkeypatch.setattr(*_full_disk_at(what, epoch))
    flags = ("--epochs", "4", "--checkpoint-every", "2", "--frame-every", "1")
    code, _, err = _main(*_train(root, run, *flags))
    _assert_one_line_error(
        code, err, f"the disk holding {run} is full", "free", f"checkpoint of epoch {kept} is kept"
    )
    assert checkpoint.latest_epoch(run / "checkpoint") == kept
    assert not list(run.rglob("*.orbax-checkpoint-tmp")) and not (run / runlock.LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------
# Pictures never cost the training (item 5).


def test_a_picture_that_cannot_be_made_is_skipped_with_one_line_and_exit_4(root, tmp_path):
    """A frame replaced by one of another size cannot join the GIF: after the checkpoint and
    metrics.json, montage.gif is skipped with one line, every other picture is written, the
    exit code is 4 and metrics.json lists the skipped picture."""
    run = tmp_path / "run"
    code, _, err = _main(*_train(root, run, "--epochs", "2", "--frame-every", "1"))
    assert code == 0, err
    media.save_png(run / "frames" / "epoch_00001.png", np.zeros((5, 7, 3)))
    (run / "montage.gif").unlink()
    code, _, err = _main(*_train(root, run, "--epochs", "2", "--resume"))
    lines = _lines(err)
    assert code == cli.EXIT_PICTURES == 4 and len(lines) == 1, err
    assert lines[0].startswith("mdn-jax: warning: montage.gif skipped: ") and "saved" in lines[0]
    assert json.loads((run / "metrics.json").read_text())["skipped_pictures"] == ["montage.gif"]
    assert not (run / "montage.gif").exists()
    assert all((run / name).is_file() for name in safe_outputs.NAMES if name != "montage.gif")


def test_a_montage_wider_than_a_gif_is_shrunk_with_one_line(tmp_path, capsys):
    for epoch in (1, 2):
        media.save_png(
            tmp_path / "frames" / f"epoch_{epoch:05d}.png", np.full((3, 70000, 3), 0.3 * epoch)
        )
    safe_outputs._montage(tmp_path)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "montage.gif shrunk 2x" in warning[0] and "65535" in warning[0]
    assert iio.imread(tmp_path / "montage.gif", index=None).shape == (2, 2, 35000, 3)


def test_degenerate_uncertainty_values_still_map_to_colours():
    values = np.array([[0.0, 1.0], [np.inf, np.nan]], np.float32)
    colours = render.heat_colours(values)
    assert colours.shape == (2, 2, 3) and np.all(np.isfinite(colours))
    np.testing.assert_array_equal(colours[1, 0], render.heat_colours(np.float32(1.0), vmax=1.0))
    np.testing.assert_array_equal(colours[1, 1], colours[0, 0])
    assert np.all(np.isfinite(render.heat_colours(np.full((2, 2), np.inf, np.float32))))


def test_a_huge_scale_floor_trains_and_renders_its_uncertainty(root, tmp_path):
    run = tmp_path / "run"
    code, _, err = _main(*_train(root, run, "--epochs", "1", "--scale-floor", "1e30"))
    assert code == 0, err
    code, _, err = _main("render", run, "--method", "uncertainty", "--out", tmp_path / "u.png")
    assert code == 0, err
    assert iio.imread(tmp_path / "u.png").shape == (8, 8, 3)


# ---------------------------------------------------------------------------------------------
# Images: EXIF orientation, signed TIFFs, a newline in a file name (items 6, 8).


def _with_orientation(path, pixels, orientation, **options):
    from PIL import Image

    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, **options)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_shows_the_image(tmp_path, suffix, orientation):
    """A phone photo stored 16x32 with orientation 6 is shown (and now trained) 32x16; every
    orientation matches Pillow's own `ImageOps.exif_transpose`, the independent reference."""
    from PIL import Image, ImageOps

    rows, cols = np.mgrid[0:16, 0:32]
    pixels = np.stack([rows * 16, cols * 8, (rows + cols) * 5], -1).astype(np.uint8)
    path = tmp_path / f"photo{suffix}"
    _with_orientation(path, pixels, orientation, **({"quality": 100} if suffix == ".jpg" else {}))
    with Image.open(path) as image:
        shown = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), np.float32) / 255
    loaded = data.load_image(path)
    assert loaded.shape == shown.shape == ((32, 16, 3) if orientation >= 5 else (16, 32, 3))
    np.testing.assert_array_equal(loaded, shown)


def test_signed_integer_tiff_is_clipped_to_0_1(tmp_path):
    pixels = np.array([[-32768, -1, 0], [1, 16384, 32767]], np.int16)
    iio.imwrite(tmp_path / "signed.tif", pixels)
    loaded = data.load_image(tmp_path / "signed.tif")
    assert loaded.min() == 0.0 and loaded.max() == 1.0
    np.testing.assert_allclose(loaded[..., 0], np.clip(pixels / 32767.0, 0, 1), rtol=1e-6)


def test_a_file_name_with_a_newline_stays_on_one_line(root, tmp_path):
    bad = tmp_path / "holiday\nphoto.png"
    bad.write_bytes(b"not an image at all")
    code, _, err = _main("train", bad, *TINY, "--out", tmp_path / "run")
    _assert_one_line_error(code, err, "holiday\\nphoto.png", "not a readable image")
    code, _, err = _main("render", tmp_path / "no\nsuch run", "--out", tmp_path / "x.png")
    _assert_one_line_error(code, err, "no\\nsuch run")


# ---------------------------------------------------------------------------------------------
# The smaller items (8).


@pytest.mark.parametrize(
    "y, words",
    [
        (np.zeros((5, 2)), ("shape [..., 3]", "(5, 2)")),
        (np.float32(0.5), ("shape [..., 3]", "()")),
        (np.zeros((4, 3)), ("batch axes (4,)", "(5,)")),
    ],
    ids=["wrong-D", "scalar", "batch"],
)
@pytest.mark.parametrize("jit", [False, True])
def test_log_prob_with_a_wrong_y_shape_is_one_value_error(y, words, jit):
    mixture = mdn_jax.joint(jnp.zeros((5, 2)), jnp.zeros((5, 2, 3)), jnp.ones((5, 2, 3)))
    log_prob = jax.jit(mdn_jax.log_prob) if jit else mdn_jax.log_prob
    with pytest.raises(ValueError) as raised:
        log_prob(mixture, y)
    assert len(str(raised.value).splitlines()) == 1
    for word in words:
        assert word in str(raised.value)
    assert log_prob(mixture, np.zeros((5, 3))).shape == (5,)  # the right shape still works


def test_negative_scales_and_temperatures_are_refused_when_known():
    scales = jnp.array([[1.0, -0.5], [1.0, 1.0]])  # joint: [K, D]; per_dim: [D, K]
    for build, logits in ((mdn_jax.joint, jnp.zeros(2)), (mdn_jax.per_dim, jnp.zeros((2, 2)))):
        with pytest.raises(ValueError, match=r"scales .* must be positive, got -0.5"):
            build(logits, jnp.zeros((2, 2)), scales)
    mixture = mdn_jax.joint(jnp.zeros(2), jnp.zeros((2, 1)), jnp.ones((2, 1)))
    key = jax.random.key(0)
    for name, value in (("temperature", -1.0), ("temperature", np.nan), ("sigma_temperature", -2)):
        with pytest.raises(ValueError, match=f"{name} must be a non-negative number"):
            mdn_jax.sample(key, mixture, **{name: value})
        with pytest.raises(ValueError, match=f"{name} must be a non-negative number"):
            render.render_values(
                *_tiny_model(), height=2, width=2, method="sample", key=key, **{name: value}
            )
    # Under jit the values are not known: documented as unchecked (NaN in, NaN out).
    traced = jax.jit(lambda t: mdn_jax.sample(key, mixture, sigma_temperature=t))(jnp.nan)
    assert np.isnan(traced).all()
    negative = jax.jit(
        lambda s: mdn_jax.log_prob(mdn_jax.joint(jnp.zeros(2), jnp.zeros((2, 1)), s), jnp.zeros(1))
    )
    assert np.isnan(negative(-jnp.ones((2, 1))))


def _tiny_model():
    config = mdn_jax.ModelConfig(hidden=(4,), components=2, in_features=2, out_features=3)
    return mdn_jax.model.init(config, key=jax.random.key(0))


def test_huge_targets_make_the_non_finite_stop_suggest_scaling_them():
    xs = np.linspace(0, 1, 64, dtype=np.float32)[:, None]
    with pytest.raises(train.NonFiniteError, match=r"targets reach 1e\+30: scale them"):
        train.fit(
            xs,
            np.full((64, 1), 1e30, np.float32),
            train_config=train.TrainConfig(epochs=1, batch_size=32),
        )


def test_resume_with_another_learning_rate_says_so(root, tmp_path):
    """Allowed (a lower rate is the fix the non-finite stop names, and test_cli resumes with
    another), but said in one line: the run no longer equals an uninterrupted one."""
    run = tmp_path / "run"
    code, _, err = _main(*_train(root, run, "--epochs", "1"))
    assert code == 0, err
    code, out, err = _main(*_train(root, run, "--epochs", "2", "--resume", "--lr", "0.5"))
    assert code == 0, err
    said = [line for line in out.splitlines() if "--lr" in line]
    assert said == [
        "--lr 0.5 replaces the 0.001 of the checkpoint: the run continues with the new rate, so "
        "it no longer equals an uninterrupted run"
    ]
    assert checkpoint.restore(run / "checkpoint").train_config.learning_rate == 0.5


def test_frames_of_a_dropped_run_leave_the_montage_after_resuming_an_older_checkpoint(
    root, tmp_path
):
    """Epochs 3-4 checkpointed and framed, then the epoch-4 checkpoint moved away (a damaged one,
    as its error line advises): resuming from epoch 2 with --epochs 3 removes frame 4."""
    run = tmp_path / "run"
    flags = ("--checkpoint-every", "2", "--frame-every", "1")
    code, _, err = _main(*_train(root, run, "--epochs", "4", *flags))
    assert code == 0, err
    (run / "checkpoint" / "4").rename(tmp_path / "moved_away")
    code, _, err = _main(*_train(root, run, "--epochs", "3", *flags, "--resume"))
    assert code == 0, err
    assert sorted(p.name for p in (run / "frames").iterdir()) == [
        f"epoch_0000{e}.png" for e in (1, 2, 3)
    ]
    assert iio.imread(run / "montage.gif", index=None).shape[0] == 3
