"""Stopping a run cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM.

SLURM (`scancel`, a time limit with `--signal`), Kubernetes (pod deletion, node drain) and cloud
preemption all send SIGTERM and, after a grace period, SIGKILL. Both signals set a flag the
epoch loop reads after each epoch: the run then stops, saves a checkpoint, writes metrics.json
and the pictures, and the command exits 128 + the signal (130 for SIGINT, 143 for SIGTERM). A
second signal of either kind aborts at once (KeyboardInterrupt; the last checkpoint stays).

Why at an epoch boundary and not at the next step: an epoch is one compiled `lax.scan` over
its steps (one dispatch, no host round trip per step), and a checkpoint records whole epochs
(the shuffle of epoch E is drawn from the key saved after epoch E - 1). Stopping inside the scan
would need a per-step program and a checkpoint format with a position inside the epoch's
shuffle to keep resume bit-identical. So the grace period must cover the rest of an epoch plus
a checkpoint: see the README (Preemption) for the numbers to set.
"""

from __future__ import annotations

import signal

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # signals that asked this process to stop, in order


class StopFlag:
    """SIGINT or SIGTERM sets `requested`; a second one raises KeyboardInterrupt.

    Used as a context manager around the training loop; outside the main thread (where Python
    cannot install handlers) it leaves signals alone.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        _received.clear()  # a new run: only its own signals decide its exit code
        for signum in _STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        _received.append(signum)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        return False


def exit_code() -> int:
    """The exit status of a run stopped by a signal: 128 + the first signal that stopped it
    (130 when none was recorded, as for Ctrl-C)."""
    return 128 + (_received[0] if _received else signal.SIGINT)
