"""SIGINT/SIGTERM end a run cleanly: the signal only sets a flag; the trainer checks it between steps,
saves a checkpoint and stops. Stopping mid-step would leave the model, optimizer and RNG out of step with
each other; a second signal falls through to the default action for a user who really wants out now.
"""

from __future__ import annotations

import signal
import threading

from mentor.errors import MentorError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(MentorError):
    """The run stopped on a signal after saving a checkpoint; the exit code is the shell's 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopOnSignal:
    """Context manager: ``received`` holds the first SIGINT/SIGTERM caught while inside it (or None)."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum
        for sig, handler in self._previous.items():  # the next signal acts as if we were not here
            signal.signal(sig, handler)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""
