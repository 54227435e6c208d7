"""Session-wide test setup: one persistent JAX compilation cache for the whole pytest session.

Much of the suite's time is XLA compiling the same small programs again: in new jitted closures
of this process (every training run builds its own), and in the `mdn-jax` subprocesses, each of
which starts with an empty in-memory cache. A persistent cache in a fresh temporary folder,
exported through the environment so that the subprocesses share it, compiles each program once
per session. It never touches the user's own cache or home, and is removed when the session
ends (the next session removes one a killed session left). mdn_jax itself enables no cache;
tests that need a process to compile on its own (tests/test_faults.py's determinism twin) strip
these variables from that process's environment.

A cached executable is the one XLA compiled, serialised, so it computes bit-identical results;
the bit-identity tests (resume, determinism, renders on several devices) run with it.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

_PREFIX = "mdn_jax-tests-jax-cache-"


def _clear_caches_of_ended_sessions(folder: Path) -> None:
    for path in folder.glob(f"{_PREFIX}*"):
        match = re.fullmatch(re.escape(_PREFIX) + r"(\d+)-[a-z0-9_]{8}", path.name)
        if not match or not path.is_dir() or path.is_symlink():
            continue
        try:
            os.kill(int(match[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (PermissionError, OverflowError):  # a live process of someone else; not a pid
            pass


_clear_caches_of_ended_sessions(Path(tempfile.gettempdir()))
_CACHE = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
os.environ.update(  # read by JAX when it is imported, here and in every subprocess
    JAX_COMPILATION_CACHE_DIR=_CACHE,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
)

import jax  # noqa: E402  (after the environment is set)

# The same again, in case a pytest plugin imported JAX before this file.
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)
