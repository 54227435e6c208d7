"""Session-wide test setup: one persistent JAX compilation cache for the whole pytest session.

Much of the suite's time is XLA compiling the same small programs again: in new jitted closures
of this process (every training run builds its own), and in the `mdn-jax` subprocesses, each of
which starts with an empty in-memory cache. A persistent cache in a fresh temporary folder,
exported through the environment so that the subprocesses and pytest-xdist's workers share it,
compiles each program once per session. It never touches the user's own cache or home, and is
removed when the session ends (the next session removes one a killed session left). mdn_jax
itself enables no cache; tests that need a process to compile on its own (tests/test_faults.py's
determinism twin) strip these variables from that process's environment.

A cached executable is the one XLA compiled, serialised, so it computes bit-identical results;
the bit-identity tests (resume, determinism) run with it.

The session also compiles with LLVM's cheapest settings (`--xla_backend_optimization_level=0`,
as tests/test_mixture.py does per function): the test programs are tiny, and XLA:CPU spends far
longer optimising them than running them (measured: XLA compile time halved, tests/test_train.py
-28% CPU, even the README's numpyro example -15%). IEEE arithmetic is unchanged (no fast-math);
every process of the session gets the same flags, so processes still agree bit for bit. The
multi-device checks of tests/test_parallel.py set their own XLA_FLAGS and so keep the default
code generation whose rounding they pin down. Flags given in XLA_FLAGS by the caller come last
and win.
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


# The process that creates the cache owns it: pytest-xdist's controller loads this file before
# it starts its workers, which inherit the variable and so share one cache (a program one worker
# compiled, the other loads); only the owner removes it.
_SHARED = os.environ.get("MDN_JAX_TESTS_JAX_CACHE", "")
_OWNER = not (
    _SHARED.startswith(os.path.join(tempfile.gettempdir(), _PREFIX)) and os.path.isdir(_SHARED)
)
if _OWNER:
    _clear_caches_of_ended_sessions(Path(tempfile.gettempdir()))
    _CACHE = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
    os.environ["MDN_JAX_TESTS_JAX_CACHE"] = _CACHE
else:
    _CACHE = _SHARED
_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if _XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # a worker inherits the owner's
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [_XLA_FLAGS, os.environ.get("XLA_FLAGS")]))
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
    if _OWNER:
        shutil.rmtree(_CACHE, ignore_errors=True)


# Seconds of work per test file (2-core Xeon, `pytest --durations=0`, rounded), for the order in
# which pytest-xdist hands whole files to its workers (`--dist loadfile` follows collection
# order): the longest first, so the session does not end with one worker on a long file while
# the other idles. Files not listed keep their place after these; a stale figure only changes
# the order, never what runs.
_FILE_SECONDS = {
    "test_bridges.py": 40,
    "test_operations.py": 56,
    "test_fastgrad.py": 51,
    "test_parallel.py": 49,
    "test_fast_step.py": 42,
    "test_ensemble_render.py": 42,
    "test_stacked.py": 40,
    "test_stacked_cli.py": 39,
    "test_reproduce_stacked.py": 36,
    "test_render.py": 35,
    "test_calibration.py": 34,
    "test_step_layout.py": 32,
    "test_faults.py": 32,
    "test_cli.py": 30,
    "test_marginals.py": 27,
    "test_bishop_ensemble.py": 27,
}


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: -_FILE_SECONDS.get(item.path.name, 0))  # stable within a file
