"""Ctrl-C during training: finish the current step, save it, stop -- and say where the run is.

The first Ctrl-C only sets a flag that the training loop checks after each step (every process
learns of it through the same reduction that checks the loss), so the run stops at a step
boundary and the saved checkpoint resumes bit-for-bit. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from vitzoo.terminal import plural
from vitzoo.training.progress import Reporter


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``saved`` says whether ``run_dir`` holds the last finished step
    (then ``--resume`` continues exactly from it)."""

    def __init__(self, run_dir: Path, epoch: int, epoch_step: int, step: int, saved: bool):
        self.run_dir, self.epoch, self.epoch_step = run_dir, epoch, epoch_step
        self.step, self.saved = step, saved
        where = (
            f"epoch {epoch + 1} step {epoch_step}" if epoch_step else f"the end of epoch {epoch}"
        )
        super().__init__(
            f"interrupted; {run_dir} holds the run at {where} ({plural(step, 'step')} in all)"
            if saved
            else f"interrupted while saving; {run_dir} keeps its previous checkpoint"
        )


class StopRequest:
    """First Ctrl-C: finish the current step, save, stop. A second one: stop at once.

    Only installed in the main thread, and only over Python's default SIGINT handler (a host
    application's own handler is left alone).
    """

    def __init__(self, reporter: Reporter) -> None:
        self.requested = False
        self.reporter = reporter
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.reporter.log("[yellow]Ctrl-C[/]: stopping after this step (press again to stop now)")

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class StopNow(Exception):
    """Raised inside the loop when a requested stop has been reached (at a step boundary)."""
