"""Compiler options chosen per backend for mdn_jax's own hot programs, and `tuned_jit` to apply
them.

Only mdn_jax's training epoch and step, its stacked epoch and its render tiles compile with
them (`jax.jit(..., compiler_options=...)`): nothing process-wide is set, so a user's own JAX
code keeps XLA's defaults.

CPU: XLA:CPU hands dot + elementwise fusions to YNNPACK by default; for the small matrices of an
MDN its own dot emitter is faster. On the 2-core Xeon of `benchmarks/RESULTS.md` ("CPU compiler
options"), turning YNN fusions off (`xla_cpu_experimental_ynn_fusion_type=""`) made the
reference step about 15-20% faster at batch 200 and 5-10% at batch 4096, for mdn_jax and a
hand-written JAX MDN alike; XNNPACK, oneDNN, fast math and the concurrency scheduler measured
within noise there. Other backends: XLA's defaults.

An option this jaxlib does not know (they are experimental and can be renamed) is dropped
after one probe compile, so an upgrade costs at most the speed-up, never a failure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# Backend name -> XLA compiler options for mdn_jax's hot programs (measured; see above).
OPTIONS: dict[str, dict[str, Any]] = {
    "cpu": {"xla_cpu_experimental_ynn_fusion_type": ""},
}


@functools.cache
def options_for(backend: str) -> dict[str, Any]:
    """The options of `OPTIONS[backend]` that this jaxlib accepts (a probe compile each,
    once per process), as a fresh dict."""
    accepted = {}
    for name, value in OPTIONS.get(backend, {}).items():
        try:
            probe = jax.jit(lambda x: x + 1, compiler_options={name: value})
            device = jax.local_devices(backend=backend)[0]
            probe.lower(jax.device_put(jnp.zeros((), jnp.float32), device)).compile()
        except Exception:  # unknown or refused option: XLA's default for it
            continue
        accepted[name] = value
    return accepted


def scan_unroll() -> int:
    """Scan iterations per loop trip on the default backend.

    CPU: 4 measured fastest at batch 200 (+8% over 1; 8 was slower than 4). GPU and others: 4
    as well, since XLA runs the scan's loop control on the host there (several microseconds
    per trip) and a batch-200 step is only a few hundred microseconds of kernels; more than 4
    mostly lengthens compilation.
    """
    return _UNROLL.get(jax.default_backend(), 4)


_UNROLL = {"cpu": 4, "gpu": 4}


def guard_as_branch() -> bool:
    """Whether the non-finite guard (`mdn_jax.step.guarded_update`) applies the optimiser update
    as a `lax.cond` branch rather than selecting old or new params and state after computing it.

    CPU: the branch (+4% at batch 200 on the 2-core Xeon, where it trained the same bits as the
    select; tests/test_step_layout.py asserts float32 rounding). Elsewhere the select, as
    before: XLA:GPU's conditional reads its predicate back to the host each time, once per step
    here, and no GPU has measured the branch yet.
    """
    return jax.default_backend() == "cpu"


def batch_chains(batch_size: int) -> int:
    """Equal parts the training loss splits a batch of `batch_size` into on the default backend
    (see `mdn_jax.step`): independent chains that XLA:CPU runs side by side on two cores.

    CPU: 2 from batch 2048 (reference step on the 2-core Xeon, parts 1 / 2 / 4: 397k / 390k /
    349k samples/s at batch 1024, 427k / 452k / 413k at 2048, 405k / 468k / 444k at 4096);
    elsewhere 1, where one batch already fills the device.
    """
    if jax.default_backend() != "cpu" or batch_size < 2048 or batch_size % 2:
        return 1
    return 2


def compiler_options() -> dict[str, Any]:
    """The options for the default backend."""
    return dict(options_for(jax.default_backend()))


class tuned_jit:  # noqa: N801 (used like jax.jit)
    """`jax.jit(fun, **jit_kwargs)` compiled with `compiler_options()`.

    The backend is looked up at the first call (not at import, which must not start JAX's
    backends); `lower`, `trace` and `eval_shape` reach the jitted function too. Usable as a
    decorator, also through `functools.partial(tuned_jit, static_argnames=...)`.
    """

    def __init__(self, fun: Callable, **jit_kwargs):
        self._fun = fun
        self._jit_kwargs = jit_kwargs
        self._jitted = None
        functools.update_wrapper(self, fun)

    def _get(self):
        if self._jitted is None:
            self._jitted = jax.jit(
                self._fun, compiler_options=compiler_options(), **self._jit_kwargs
            )
        return self._jitted

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)
