"""Shared helpers for the benchmark scripts: environment facts, timing, output."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable

import jax


def environment() -> dict:
    import flax
    import optax

    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def emit(record: dict) -> None:
    """One JSON line on stdout."""
    print(json.dumps(record), flush=True)


def timed(function: Callable[[], object]) -> float:
    """Seconds for one call; the function must block until its work is done."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def alternate(
    contenders: dict[str, Callable[[], object]], *, repeats: int
) -> dict[str, list[float]]:
    """Time every contender `repeats` times in turn (A B C A B C ...), so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            times[name].append(timed(function))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
