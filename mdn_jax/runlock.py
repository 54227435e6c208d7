"""One writer per run folder: a lock file taken before anything in the folder is touched.

`hold(out)` takes an exclusive `fcntl.flock` on `out/.mdn_jax.lock` and writes who holds it
(pid, host, start time, command) into the file. The kernel drops a flock when its process ends
in any way (SIGKILL and power loss included), so a lock file left by a dead process is not
locked and the next run simply takes it over: there is no stale lock to clear by hand. A second
`train` on a folder whose lock is held raises `RunLockedError`, one line naming the process.

The file is removed when the lock is released (the inode is checked after locking, so a run
that opened the file just before another removed it cannot end up holding a lock nobody else
sees). With several processes (`jax.distributed`) only process 0 locks; the others learn the
outcome through a tiny all-gather, so all of them stop together when the folder is taken.

flock works on local filesystems and on NFS v4 (as a whole-file lock); on a filesystem without
locks (some FUSE mounts) `hold` says so and runs without one rather than refusing to train.

`restore_newest(directory)` is for readers (`render`) of a folder that may be being trained:
Orbax deletes old checkpoints as new ones land (the trainer keeps the newest two), so a reader
first hard-links the newest complete one into a private folder and reads that; one deleted
before it could be linked is gone, not damaged, and the next newest is taken. The private folder's
name carries the reader's pid and host (`.mdn_jax-read-<pid>-<host>-XXXXXXXX`), so a reader killed
mid-read (SIGKILL) leaves a folder the next reader can tell is orphaned and clears: only folders
of this host whose pid is dead, never a live process's, never anything else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOCK_NAME = ".mdn_jax.lock"
_READ_PREFIX = ".mdn_jax-read-"
# `_READ_PREFIX`, pid, host (sanitised), then tempfile.mkdtemp's 8 random characters.
_READ_COPY = re.compile(re.escape(_READ_PREFIX) + r"(\d+)-([A-Za-z0-9._-]+)-[a-z0-9_]{8}")


class RunLockedError(ValueError):
    """Another live process is writing the run folder; the message names it (one line)."""


def _holder(path: Path) -> str:
    """Who holds the lock at `path`, as written into it, for the one-line error."""
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info["time"])))
        return f"process {int(info['pid'])} on {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):  # being written at this very moment
        return "another process"


def _take(path: Path):
    """An open file holding the exclusive lock on `path`, or None if another process holds it."""
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:  # the holder before us may have removed the file between our open and our lock
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


def _write_holder(handle) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": time.time(),
        "command": " ".join(sys.argv[:1] + [os.path.basename(a) for a in sys.argv[1:3]]),
    }
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(info) + "\n")
    handle.flush()


def _agree(ok: bool) -> bool:
    """True when every process reports `ok` (one process: `ok` itself)."""
    import jax

    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array([int(ok)], np.int32))))


@contextlib.contextmanager
def hold(out: str | os.PathLike, *, main: bool = True):
    """Hold the run folder `out` (created if missing) for the duration of the block.

    Raises RunLockedError, and touches nothing in `out`, if another live process holds it. A
    folder this call created is removed again on the way out if the run left it empty.
    """
    out = Path(out)
    handle, created, path, holder = None, False, out / LOCK_NAME, "another process"
    if main:
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file, not a run folder; pass a folder path as --out")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            handle = _take(path)
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            print(f"mdn-jax: {out} does not support file locks; not locking it", file=sys.stderr)
            handle = False
        if handle is None:
            holder = _holder(path)
            if created:
                _remove_if_empty(out)
        elif handle:
            _write_holder(handle)
    if not _agree(handle is not None or not main):
        raise RunLockedError(
            f"{out} is in use by {holder}; wait for that run to finish, stop it, or choose "
            "another --out folder"
        )
    try:
        yield
    finally:
        if handle:
            with contextlib.suppress(OSError):
                path.unlink()
            handle.close()
        if created:
            _remove_if_empty(out)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()  # only succeeds when empty


def _host() -> str:
    """This host's name, reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "localhost"


def _is_running(pid: int) -> bool:
    """False only when no process `pid` exists on this host (an unreaped zombie still counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # someone else's process; not a pid
        return True
    return True


def clear_orphaned_read_copies(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the private read folders (see `restore_newest`) that killed readers left in
    `run_dir`: only real folders named by `_READ_COPY`, made on this host by a process that no
    longer exists. Returns the folders removed; a folder that cannot be listed clears nothing."""
    removed, host = [], _host()
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return removed
    for entry in entries:
        match = _READ_COPY.fullmatch(entry.name)
        if not match or match[2] != host or not entry.is_dir(follow_symlinks=False):
            continue
        if not _is_running(int(match[1])):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def restore_newest(directory, *, attempts: int = 20):
    """`checkpoint.restore` of the newest complete checkpoint in `directory` (a run folder's
    `checkpoint/`), safe while a training run replaces its checkpoints.

    When the folder is locked by a run, the newest checkpoint is first hard-linked into a
    private folder beside `checkpoint/` (milliseconds; a trainer deleting the original then
    leaves the links intact, and finished checkpoints are never modified) and read from there;
    a checkpoint deleted before it is linked is gone, not damaged, so the next newest is taken.
    Errors about a checkpoint are always reported against its real folder.
    """
    from mdn_jax import checkpoint as ckpt

    directory = Path(directory)
    clear_orphaned_read_copies(directory.parent)
    if not (directory.parent / LOCK_NAME).exists():  # nobody training: read it where it is
        return ckpt.restore(directory)
    for _ in range(attempts):
        epoch = ckpt.latest_epoch(directory)
        if epoch is None:
            break
        try:
            private = Path(
                tempfile.mkdtemp(
                    prefix=f"{_READ_PREFIX}{os.getpid()}-{_host()}-", dir=directory.parent
                )
            )
        except OSError:  # a folder we may not write to: read in place
            break
        try:
            shutil.copytree(directory / str(epoch), private / str(epoch), copy_function=os.link)
            restored = ckpt.restore(private, epoch=epoch)
        except (OSError, ckpt.CheckpointError):
            if (directory / str(epoch)).is_dir():  # still there: the real read says what is wrong
                break
            continue  # deleted by the trainer while we linked it: take the next newest
        finally:
            shutil.rmtree(private, ignore_errors=True)
        return restored
    return ckpt.restore(directory)


def holding_out_folder(function):
    """Decorate a function with an `out` argument (a run folder) to run it holding that folder
    (`hold`); process 0 takes the lock, as it is the one that writes the folder's files."""
    import functools
    import inspect

    signature = inspect.signature(function)

    @functools.wraps(function)
    def locked(*args, **kwargs):
        from mdn_jax import parallel

        out = signature.bind(*args, **kwargs).arguments["out"]
        with hold(out, main=parallel.is_main_process()):
            return function(*args, **kwargs)

    return locked
