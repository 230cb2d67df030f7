"""Progress display: a rich bar on a terminal, plain log lines everywhere else (CI, files).

Only the process that writes (rank 0) shows anything; other ranks get a silent reporter.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vitzoo.terminal import make_console


class Reporter:
    """Epoch/step progress with loss, throughput and ETA."""

    def __init__(
        self, console: Console | None = None, *, enabled: bool = True, log_every: int = 20
    ):
        self.console = console or make_console(stderr=True)
        self.enabled = enabled
        self.log_every = log_every
        self.rich = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        self._start = 0.0
        self._images = 0
        self._epoch = 0
        self._epochs = 0
        self._steps = 0

    def log(self, message: str, *, markup: bool = True) -> None:
        """Print one line (rich markup allowed: escape user text with ``rich.markup.escape``)."""
        if self.enabled:
            self.console.print(message, highlight=False, soft_wrap=True, markup=markup)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._epoch, self._epochs, self._steps = epoch, epochs, steps
        self._start, self._images = time.perf_counter(), 0
        if self.rich:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[speed]} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=steps, epoch=f"{epoch}/{epochs}", loss="-", speed="-"
            )

    def step(self, step: int, loss: float, images: int, lr: float) -> None:
        if not self.enabled:
            return
        self._images += images
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        speed = self._images / elapsed
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=f"{loss:.4f}", speed=f"{speed:.0f}")
        elif step % self.log_every == 0 or step == self._steps:
            eta = elapsed / step * (self._steps - step)
            self.log(
                f"epoch {self._epoch}/{self._epochs} step {step}/{self._steps} "
                f"loss {loss:.4f} lr {lr:.2e} {speed:.0f} img/s eta {eta:.0f}s"
            )

    def end_epoch(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
