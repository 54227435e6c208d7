"""Faults: a run killed outright (SIGKILL) at the worst moments loses nothing, runs are reproducible
across processes, and run folders edited or mixed by hand are refused with one line.

Every kill is deterministic: `mdn-jax` runs through a small wrapper (KILLER, written into a
temporary folder) that patches one function of mdn_jax or Orbax to do part of its work and then
SIGKILL its own process. Nothing in mdn_jax knows about these tests.

The child processes share a persistent JAX compilation cache (set in their environment only), so
each program compiles once, in the first process that needs it. The determinism twin runs without
it, so reproducibility is checked across two independent compilations as well as two processes.
"""

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import imageio.v3 as iio
import jax
import numpy as np
import pytest

from mdn_jax import checkpoint, cli, media

FLAGS = [
    "--encoding",  # the reference settings, the default before the hash grid
    "identity",
    "--epochs",
    "4",
    "--batch-size",
    "32",
    "--hidden",
    "8,8",
    "--components",
    "2",
    "--frame-every",
    "1",
    "--checkpoint-every",
    "1",
    "--no-progress",
]

KILLER = r'''
"""`python killer.py POINT ARGS...`: run `mdn-jax ARGS...` and SIGKILL this process at POINT:

epoch:K              once the K-th epoch this process runs is dispatched: not yet read,
                     reported or saved
checkpoint-write:E   while Orbax writes epoch E's checkpoint: arrays on their way, metadata
                     not written
checkpoint-delete:E  after epoch E's checkpoint is in place, halfway through deleting the
                     oldest one
write:NAME           halfway through writing the file NAME (its temporary file cut to half
                     its bytes)
"""
import asyncio
import os
import signal
import sys
from pathlib import Path

import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import deleter

from mdn_jax import checkpoint, cli, media, train

point, argv = sys.argv[1], sys.argv[2:]
kind, _, where = point.partition(":")
saving = {}  # the epoch mdn_jax.checkpoint.save is writing


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def save(directory, *, _save=checkpoint.save, **kwargs):
    saving["epoch"] = kwargs["epoch"]
    return _save(directory, **kwargs)


checkpoint.save = save
if kind == "epoch":
    def init(self, *args, _init=train.Trainer.__init__, _calls=[], **kwargs):
        _init(self, *args, **kwargs)
        def epoch_then_die(*epoch_args, _epoch=self.epoch):
            result = _epoch(*epoch_args)
            _calls.append(1)
            if len(_calls) == int(where):
                die()
            return result
        self.epoch = epoch_then_die
    train.Trainer.__init__ = init
elif kind == "checkpoint-write":
    async def async_save(self, *args, _save=ocp.JsonCheckpointHandler.async_save, **kwargs):
        if saving.get("epoch") == int(where):
            await asyncio.sleep(0.2)  # let the array writes get under way
            die()
        return await _save(self, *args, **kwargs)
    ocp.JsonCheckpointHandler.async_save = async_save
elif kind == "checkpoint-delete":
    def delete(self, path, _delete=deleter.PathDeleter.delete, **kwargs):
        if saving.get("epoch") == int(where):
            files = sorted(p for p in Path(path).rglob("*") if p.is_file())
            for file in files[: len(files) // 2]:
                file.unlink()
            die()
        return _delete(self, path, **kwargs)
    deleter.PathDeleter.delete = delete
elif kind == "write":
    def atomic_write(path, write, _atomic_write=media.atomic_write):
        def write_half_then_die(temporary):
            write(temporary)
            with open(temporary, "rb+") as handle:
                handle.truncate(os.path.getsize(temporary) // 2)
            die()
        return _atomic_write(path, write_half_then_die if Path(path).name == where else write)
    media.atomic_write = atomic_write
else:
    raise SystemExit(f"unknown kill point {point!r}")
sys.exit(cli.main(argv))
'''


def _environment(*, cache):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))
    }
    if cache:
        env.update(
            # the session's cache (tests/conftest.py) where there is one: shared with the tests
            JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    return env


def _start(root, args, *, kill=None, cache=None):
    """`mdn-jax ARGS` (through the killer when `kill` names a point) in `root`, as a Popen."""
    prefix = [str(root / "killer.py"), kill] if kill else ["-m", "mdn_jax.cli"]
    return subprocess.Popen(
        [sys.executable, *prefix, *map(str, args)],
        cwd=root,
        env=_environment(cache=cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process):
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, out, err


def _main(*args):
    """`cli.main` in-process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, err.getvalue()


# Lines some JAX/absl/XLA builds print on stderr by themselves (as in test_cli.py); not ours.
_NOISE = re.compile(r"^(WARNING:|[WIEF]\d{4} |An NVIDIA GPU may be present|.*absl::InitializeLog)")


def _assert_one_line_error(code, stderr, *words):
    lines = [line for line in stderr.splitlines() if line.strip() and not _NOISE.match(line)]
    assert code == 2 and len(lines) == 1, (code, stderr)
    assert lines[0].startswith("mdn-jax: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def _leaves(run):
    restored = checkpoint.restore(run / "checkpoint")
    state = restored.state
    return restored, [
        np.asarray(x) for x in jax.tree.leaves((state.params, state.opt_state, state.step))
    ] + [np.asarray(jax.random.key_data(state.key))]


def _assert_same_run(a, b):
    """Same epoch, bit-identical params, optimiser state, step, key and loss history."""
    (restored_a, leaves_a), (restored_b, leaves_b) = _leaves(a), _leaves(b)
    assert restored_a.epoch == restored_b.epoch
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert [h["loss"] for h in restored_a.history] == [h["loss"] for h in restored_b.history]


def _temporaries(run):
    """Temporary files and folders anywhere in a run folder."""
    return sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if media._TEMPORARY_NAME.fullmatch(p.name) or p.name.endswith(".orbax-checkpoint-tmp")
    )


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    for seed in (1, 2):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        iio.imwrite(root / f"{seed}.png", pixels)
    (root / "killer.py").write_text(KILLER)
    return root


def _train(root, run, *extra):
    return ["train", root / "1.png", root / "2.png", *FLAGS, "--out", root / run, *extra]


@pytest.fixture(scope="module")
def uninterrupted(root):
    """Two uninterrupted runs in two processes, same flags and seed: the reference (which fills the
    compilation cache) and its twin (which compiles on its own); started together."""
    reference = _start(root, _train(root, "reference"), cache=root / "cache")
    twin = _start(root, _train(root, "twin"))
    for process in (reference, twin):
        code, _, err = _finish(process)
        assert code == 0, err
    return root / "reference", root / "twin"


def test_same_seed_and_flags_in_two_processes_give_bit_identical_parameters(uninterrupted):
    reference, twin = uninterrupted
    _assert_same_run(reference, twin)
    assert (reference / "final_mode.png").read_bytes() == (twin / "final_mode.png").read_bytes()


def _assert_no_partial_files(run):
    """Every file under its final name is complete: images decode, JSON parses."""
    for path in run.rglob("*"):
        if (
            not path.is_file()
            or media._TEMPORARY_NAME.fullmatch(path.name)
            or "checkpoint" in path.parts
        ):
            continue
        if path.suffix in (".png", ".gif"):
            assert iio.imread(path, index=None).size > 0, path
        elif path.suffix == ".json":
            json.loads(path.read_text())


# Two runs, each killed twice at different points and then finished; their steps run two at a
# time (so three steps; more kill points would add a step each). Each kill: (kill point, the
# newest complete checkpoint after it, what it leaves behind).
KILLS = {
    "killed_early": [
        (
            "checkpoint-write:1",
            None,
            "checkpoint/1.orbax-checkpoint-tmp",
        ),  # no checkpoint yet: fresh start
        ("epoch:3", 2, None),  # the fresh start, killed while epoch 3 computes
    ],
    "killed_late": [
        ("checkpoint-delete:3", 3, "checkpoint/1"),  # epoch 3 in place, epoch 1 half deleted
        (
            "write:montage.gif",
            4,
            ".montage.gif.",
        ),  # after the last checkpoint, in the final outputs
    ],
}


def _check_killed(root, run, kill, epoch, leftover):
    """After a kill: the checkpoint the kill allows, its leftover, nothing partial under a final
    name, and either a restorable, renderable checkpoint or one-line refusals to render or
    resume."""
    assert checkpoint.latest_epoch(run / "checkpoint") == epoch, kill
    if leftover:  # proof that the kill hit where it says
        assert any(str(p.relative_to(run)).startswith(leftover) for p in run.rglob("*")), kill
    if kill.startswith(
        "write:"
    ):  # its first write: the file is not there at all, not there half written
        assert not [p for p in run.rglob(kill.split(":")[1])], kill
    _assert_no_partial_files(run)
    if epoch is None:
        _assert_one_line_error(
            *_main("render", run, "--out", root / "render.png"), "no checkpoint", "train first"
        )
        _assert_one_line_error(
            *_main(*_train(root, run.name, "--resume")), "no checkpoint", "without --resume"
        )
    else:
        assert checkpoint.restore(run / "checkpoint").epoch == epoch
        code, err = _main("render", run, "--out", root / "render.png")
        assert code == 0, (kill, err)
        assert iio.imread(root / "render.png").shape == (8, 8, 3)


def test_sigkill_at_every_stage_then_resume_equals_the_uninterrupted_run(root, uninterrupted):
    """Kill runs at four points (mid-checkpoint, mid-epoch, mid-deletion of an old checkpoint,
    mid-GIF), restarting each time as a user would:
    `--resume` once a checkpoint exists, a fresh start before. Finished, each run is bit-identical
    to the uninterrupted reference, with the same renders and montage and no temporary left. The
    last resume of one run also finds its config.json edited into nonsense, which resume ignores
    (the checkpoint holds the configs) and rewrites."""
    reference, _ = uninterrupted
    runs = {name: root / name for name in KILLS}
    for step in range(3):
        if (
            step == 2
        ):  # resume ignores config.json, and rewrites it, even edited into nonsense by hand
            (runs["killed_late"] / "config.json").write_text(
                '{"model": "mine", "data": {"height": -1'
            )
        started = {}
        for name, run in runs.items():
            kill = KILLS[name][step][0] if step < len(KILLS[name]) else None
            resume = ["--resume"] if checkpoint.latest_epoch(run / "checkpoint") is not None else []
            started[name] = (
                kill,
                _start(root, _train(root, name, *resume), kill=kill, cache=root / "cache"),
            )
        for name, (kill, process) in started.items():
            code, out, err = _finish(process)
            if kill is None:
                assert code == 0, (name, err)
            else:
                assert code == -signal.SIGKILL, (name, kill, code, out, err)
                _check_killed(root, runs[name], *KILLS[name][step])
    for run in runs.values():
        _assert_same_run(run, reference)
        for name in (
            "final_mode.png",
            "montage.gif",
            "components.png",
            "samples.png",
            "uncertainty.png",
            "config.json",
        ):
            assert (run / name).read_bytes() == (reference / name).read_bytes(), (run.name, name)
        assert sorted(p.name for p in (run / "frames").iterdir()) == [
            f"epoch_0000{e}.png" for e in (1, 2, 3, 4)
        ]
        assert _temporaries(run) == [], run.name
        assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["3", "4"]


def test_remove_temporaries_deletes_only_what_atomic_write_leaves(tmp_path):
    media.save_png(tmp_path / "kept.png", np.zeros((2, 2, 3)))
    for name in (
        ".kept.png.abc_1234.tmp.png",
        ".montage.gif.zz9_zz9z.tmp.gif",
        ".config.json.a1b2c3d4.tmp.json",
        ".gitignore",
        ".kept.png",
        "x.tmp.png",
        ".x.short.tmp.png",
    ):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".dir.abcdefgh.tmp.png").mkdir()
    removed = media.remove_temporaries(tmp_path)
    assert [p.name for p in removed] == [
        ".config.json.a1b2c3d4.tmp.json",
        ".kept.png.abc_1234.tmp.png",
        ".montage.gif.zz9_zz9z.tmp.gif",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".dir.abcdefgh.tmp.png",
        ".gitignore",
        ".kept.png",
        ".x.short.tmp.png",
        "kept.png",
        "x.tmp.png",
    ]
    assert media.remove_temporaries(tmp_path / "absent") == []


# ---------------------------------------------------------------------------------------------
# Run folders edited by hand or mixed up: one line, exit 2, nothing written.


def _copy(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    return run


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[8, 8]",
        "{}",
        '{"data": [8, 8]}',
        '{"data": {"height": "eight", "width": 8}}',
        '{"data": {"height": -3, "width": 8}}',
        '{"data": {"height": 8.5, "width": 8}}',
        '{"data": {"height": true, "width": 8}}',
        None,
    ],
    ids=[
        "invalid",
        "list",
        "no-data",
        "data-list",
        "string",
        "negative",
        "float",
        "bool",
        "not-utf8",
    ],
)
def test_render_with_a_hand_edited_config_json(uninterrupted, tmp_path, text):
    run = _copy(uninterrupted[0], tmp_path)
    path = run / "config.json"
    path.write_bytes(b"\xff\xfe\x00 binary" if text is None else text.encode())
    _assert_one_line_error(
        *_main("render", run, "--out", tmp_path / "x.png"),
        "config.json",
        "no usable training size",
        "--size HxW",
    )
    assert not (tmp_path / "x.png").exists()
    code, err = _main(
        "render", run, "--size", "3x5", "--out", tmp_path / "x.png"
    )  # the fix it names
    assert code == 0, err
    assert iio.imread(tmp_path / "x.png").shape == (3, 5, 3)


def test_render_with_a_huge_size_in_config_json(uninterrupted, tmp_path):
    run = _copy(uninterrupted[0], tmp_path)
    (run / "config.json").write_text('{"data": {"height": 1000000, "width": 1000000}}')
    _assert_one_line_error(
        *_main("render", run, "--out", tmp_path / "x.png"),
        "1000000x1000000",
        "1,000,000,000,000 pixels",
        "smaller --size",
    )
    assert not (tmp_path / "x.png").exists()


def _edit_meta(run, **changes):
    """Edit the newest checkpoint's stored metadata (Orbax JSON item `meta`)."""
    path = run / "checkpoint" / "4" / "meta" / "metadata"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            del meta[key]
        elif isinstance(value, dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, words",
    [
        (
            {"model_config": {"hidden": [16, 16]}},
            ("does not match its stored config", "hidden=(16, 16)", "on disk"),
        ),
        (
            {"model_config": {"structure": "full"}},
            ("does not match its stored config", "structure='full'"),
        ),
        (
            {"model_config": {"components": "two"}},
            ("unreadable checkpoint metadata", "components", "'two'"),
        ),
        ({"epoch": ...}, ("unreadable checkpoint metadata", "no 'epoch' entry")),
        ({"epoch": 9}, ("unreadable checkpoint metadata", "says epoch 9", "folder of epoch 4")),
        ({"history": 5}, ("unreadable checkpoint metadata", "history must be a list")),
        ({"num_samples": -5}, ("unreadable checkpoint metadata", "positive integer", "-5")),
        ({"key_impl": "nonsense"}, ("unreadable checkpoint metadata", "PRNG")),
        ({"format": 99}, ("unreadable checkpoint metadata", "format 99", "reads format 1")),
        ("{not json", ("unreadable checkpoint metadata",)),
        (None, ("unreadable checkpoint metadata", "meta", "not found")),
    ],
    ids=[
        "other-hidden",
        "other-structure",
        "components-string",
        "no-epoch",
        "wrong-epoch",
        "history-int",
        "negative-samples",
        "key-impl",
        "newer-format",
        "invalid-json",
        "meta-deleted",
    ],
)
def test_checkpoint_not_matching_its_config_or_edited_is_refused(
    uninterrupted, root, tmp_path, change, words
):
    """A checkpoint whose arrays do not fit the model config stored with it (as when parts of two
    run folders are mixed), or whose metadata was edited: render and resume both refuse with one
    line, exit 2, and change nothing."""
    run = _copy(uninterrupted[0], tmp_path)
    meta = run / "checkpoint" / "4" / "meta"
    if change is None:
        shutil.rmtree(meta)
    elif isinstance(change, str):
        (meta / "metadata").write_text(change)
    else:
        _edit_meta(run, **change)
    before = _snapshot(run)
    _assert_one_line_error(*_main("render", run, "--out", tmp_path / "x.png"), *words)
    _assert_one_line_error(*_main(*_train(root, run, "--resume")), *words)
    assert not (tmp_path / "x.png").exists()
    assert _snapshot(run) == before


def test_damaged_checkpoint_arrays_give_one_line(uninterrupted, tmp_path):
    """Array files cut short (a disk that filled up, a copy interrupted): one line naming the
    folder, in a real process, whose stderr must not carry Orbax's closed-event-loop tracebacks."""
    run = _copy(uninterrupted[0], tmp_path)
    for path in (run / "checkpoint" / "4" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[:10])
    code, _, err = _finish(_start(tmp_path, ["render", run, "--out", tmp_path / "x.png"]))
    _assert_one_line_error(
        code,
        err,
        str(run / "checkpoint" / "4"),
        "is damaged",
        "arrays cannot be read",
        "previous checkpoint",
    )
    assert not (tmp_path / "x.png").exists()
