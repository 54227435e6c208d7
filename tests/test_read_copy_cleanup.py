"""A `render` killed mid-read leaves its private read folder behind (issue 16 follow-up).

`render` of a folder being trained reads the newest checkpoint through a private hard-linked copy
(`mdn_jax.runlock.restore_newest`), named `.mdn_jax-read-<pid>-<host>-XXXXXXXX`. A reader killed
with SIGKILL cannot remove it; the next reader does, and clears only such folders of this host
whose process is gone: never a live process's, never anything that does not match the pattern.

As in tests/test_faults.py, the kill is real and deterministic: `mdn-jax render` runs through a
small wrapper that SIGKILLs its own process when it starts reading its private copy.
"""

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from mdn_jax import cli, runlock

TINY = ["--hidden", "16,16", "--components", "2", "--batch-size", "32", "--no-progress"]

KILLER = """
import os, signal, sys
from mdn_jax import checkpoint, cli
_restore = checkpoint.restore
def restore(directory, *args, **kwargs):
    if os.path.basename(str(directory)).startswith(".mdn_jax-read-"):
        os.kill(os.getpid(), signal.SIGKILL)  # the copy is linked and not yet read or removed
    return _restore(directory, *args, **kwargs)
checkpoint.restore = restore
sys.exit(cli.main(sys.argv[1:]))
"""


def _main(*args):
    """`cli.main` in-process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, err.getvalue()


def _read_copies(run):
    return sorted(path.name for path in run.iterdir() if path.name.startswith(".mdn_jax-read-"))


def _dead_pid():
    """The pid of a process that has ended and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process.wait() == 0
    return process.pid


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained run folder (one epoch of a tiny model on one 8x8 image)."""
    root = tmp_path_factory.mktemp("read_copy")
    pixels = np.random.default_rng(1).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    iio.imwrite(root / "1.png", pixels)
    code, err = _main("train", root / "1.png", *TINY, "--epochs", "1", "--out", root / "run")
    assert code == 0, err
    (root / "killer.py").write_text(KILLER)
    return root / "run"


def test_a_killed_render_leaves_its_pid_named_folder_and_the_next_render_clears_it(run, tmp_path):
    """While the folder is held (being trained), a render SIGKILLed mid-read leaves its private
    copy, named with its pid and host; the next render reads the checkpoint and clears it."""
    with runlock.hold(run):
        killed = subprocess.Popen(
            [sys.executable, run.parent / "killer.py", "render", run, "--out", tmp_path / "k.png"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, err = killed.communicate(timeout=300)
        assert killed.returncode == -signal.SIGKILL, err[-2000:]
        (left,) = _read_copies(run)
        assert left.startswith(f".mdn_jax-read-{killed.pid}-{runlock._host()}-"), left
        assert (run / left / "1").is_dir()  # the hard-linked checkpoint of epoch 1
        code, err = _main("render", run, "--out", tmp_path / "next.png")
        assert code == 0, err
        assert _read_copies(run) == []
    assert iio.imread(tmp_path / "next.png").shape == (8, 8, 3)
    assert not (tmp_path / "k.png").exists()


def test_only_folders_of_dead_processes_on_this_host_are_cleared(run, tmp_path):
    """Beside a dead reader's folder: a live process's, this process's, another host's, a file
    and a link with the pattern's name, and names off the pattern. Only the dead one goes, also
    when nobody is training (the reader then reads in place)."""
    host, dead = runlock._host(), _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        target = tmp_path / "target"
        target.mkdir()
        (target / "keep").write_text("x")
        kept = {
            f".mdn_jax-read-{live.pid}-{host}-abcd_123": "dir",
            f".mdn_jax-read-{os.getpid()}-{host}-abcd_123": "dir",
            f".mdn_jax-read-{dead}-other-host.example-abcd_123": "dir",
            f".mdn_jax-read-{dead}-{host}-file0000": "file",
            f".mdn_jax-read-{dead}-{host}-link0000": "link",
            f".mdn_jax-read-{dead}-{host}-short": "dir",
            f".mdn_jax-read-{dead}-{host}": "dir",
            f".mdn_jax-read-x{dead}-{host}-abcd_123": "dir",
            f"mdn_jax-read-{dead}-{host}-abcd_123": "dir",
        }
        for name, kind in kept.items():
            if kind == "dir":
                (run / name).mkdir()
                (run / name / "inside").write_text("x")
            elif kind == "file":
                (run / name).write_text("x")
            else:
                (run / name).symlink_to(target, target_is_directory=True)
        orphan = run / f".mdn_jax-read-{dead}-{host}-abcd_123"
        orphan.mkdir()
        (orphan / "1").mkdir()
        assert not (run / runlock.LOCK_NAME).exists()
        restored = runlock.restore_newest(run / "checkpoint")
        assert restored.epoch == 1
        assert not orphan.exists()
        assert all(os.path.lexists(run / name) for name in kept)
        assert (target / "keep").read_text() == "x"
        for name, kind in kept.items():
            assert kind != "dir" or (run / name / "inside").read_text() == "x", name
        live.kill()
        live.wait()
        assert runlock.clear_orphaned_read_copies(run) == [
            run / f".mdn_jax-read-{live.pid}-{host}-abcd_123"
        ]
    finally:
        live.kill()
        live.wait()
        for name in kept:
            path = run / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif os.path.lexists(path):
                path.unlink()
    assert _read_copies(run) == []
