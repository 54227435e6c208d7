"""A full disk while a run writes its folder: one line with the folder, the free space and the fix.

Every write in a run folder can meet a full disk (or a full quota): a checkpoint (Orbax and
tensorstore report it as an OSError, or as a ValueError carrying `RESOURCE_EXHAUSTED` and the
C library's "No space left on device"), a frame, the GIF, metrics.json. `reports_full_disk`
turns any of them into `DiskFullError`. What is on disk stays consistent: files are written
under temporary names and renamed, and Orbax deletes the previous checkpoint only after the
next one is complete, so the newest complete checkpoint is kept; the temporaries the failed
write left are removed at once (and would be on the next start anyway).
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import shutil
import time
from pathlib import Path

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Tensorstore's RESOURCE_EXHAUSTED alone is not enough: XLA uses it for running out of memory.
_FULL_WORDS = ("No space left on device", "Disk quota exceeded")


class DiskFullError(ValueError):
    """The disk of a run folder is full; the message is one line naming folder, space and fix."""


def is_disk_full(error: BaseException) -> bool:
    """True for an out-of-space error, or one caused by one (the chain is followed)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            return True
        if any(word in str(error) for word in _FULL_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


class _RepeatsOfTheFullDisk(logging.Filter):
    """Drops the records that repeat a full disk `DiskFullError` already reported: asyncio's
    "exception was never retrieved" for each of Orbax's writer tasks, and Orbax's own absl
    records from its writer threads ("_SignalingThread.run() raised an exception:
    RESOURCE_EXHAUSTED ..."), both with tracebacks, often after the one line, at exit."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_disk_full(error):
            return False
        return not any(word in record.getMessage() for word in _FULL_WORDS)


def _quiet_the_writer_tasks() -> None:
    for name in ("asyncio", "absl"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RepeatsOfTheFullDisk) for f in logger.filters):
            logger.addFilter(_RepeatsOfTheFullDisk())


def free_space(folder: str | Path) -> str:
    """The free space on the disk holding `folder` (or its nearest existing parent), for people."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = float(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown space"
    for unit in ("bytes", "KB", "MB", "GB"):
        if free < 1024 or unit == "GB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    raise AssertionError("unreachable")


def _clear_leftovers(out: Path, *, settle: float = 0.2, limit: float = 5.0) -> None:
    """Remove the run's temporaries until two checks `settle` seconds apart find none (at most
    `limit` seconds): when the error reaches us, Orbax's writer threads may still be finishing
    the failed save's other arrays and recreate its temporary folder after a first cleanup."""
    from mdn_jax import checkpoint as ckpt
    from mdn_jax import media

    deadline = time.monotonic() + limit
    quiet_checks = 0
    while quiet_checks < 2 and time.monotonic() < deadline:
        found = ckpt.remove_unfinished(out / "checkpoint")
        for folder in (out, out / "frames"):
            found += media.remove_temporaries(folder)
        quiet_checks = 0 if found else quiet_checks + 1
        if quiet_checks < 2:
            time.sleep(settle)


def explain(out: str | Path, error: BaseException) -> DiskFullError:
    """The one-line DiskFullError for `error`, a full disk met while writing the run `out`."""
    from mdn_jax import checkpoint as ckpt

    out = Path(out)
    kept = ckpt.latest_epoch(out / "checkpoint")
    where = (
        f"the checkpoint of epoch {kept} is kept: continue with --resume"
        if kept is not None
        else "no checkpoint was written yet: start again"
    )
    return DiskFullError(
        f"the disk holding {out} is full ({free_space(out)} free); free some space there or "
        f"move the folder to a larger disk; {where}"
    )


def reports_full_disk(function):
    """Decorate a function with an `out` argument (a run folder) so that a full disk anywhere in
    it ends as one DiskFullError, its temporaries cleared. Use inside the folder's lock."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def guarded(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as error:
            if not is_disk_full(error):
                raise
            out = Path(signature.bind(*args, **kwargs).arguments["out"])
            _quiet_the_writer_tasks()
            _clear_leftovers(out)
            raise explain(out, error) from None

    return guarded
