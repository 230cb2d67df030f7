"""Timing that survives a shared, drifting machine: interleaved repetitions, medians, spreads.

Every repetition runs each workload once (``iters`` calls), in an order that rotates per
repetition, so load that drifts over time (other processes, thermal state) hits every workload
alike; figures are medians over repetitions, with min/max kept as the spread. Used by
``vitzoo bench`` and by ``benchmarks/compare_peers.py`` (one method, one implementation).
"""

from __future__ import annotations

import ctypes
import gc
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Workload = Callable[[], object]


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def clock_of(clock: str) -> Callable[[], float]:
    """``wall``: ``perf_counter``; ``cpu``: CPU time of this process (all its threads).

    CPU time is for a machine shared with other jobs: time spent descheduled does not count, so
    ratios stay meaningful; it is not a latency.
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    return time.process_time if clock == "cpu" else time.perf_counter


def call_times(
    fn: Workload, iters: int, device: str | torch.device = "cpu", clock: str = "wall"
) -> list[float]:
    """Seconds of each of ``iters`` calls (synchronised per call, so each one is a latency)."""
    now = clock_of(clock)
    times = []
    for _ in range(iters):
        sync(device)
        start = now()
        fn()
        sync(device)
        times.append(now() - start)
    return times


def interleaved(
    workloads: Mapping[str, Workload],
    *,
    repeats: int,
    iters: int,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    clock: str = "wall",
) -> dict[str, list[list[float]]]:
    """Warm every workload up, then time them interleaved with a rotating order.

    Returns, per workload, one list per repetition of the per-call seconds.
    """
    for fn in workloads.values():
        for _ in range(warmup):
            fn()
    sync(device)
    order = list(workloads)
    times: dict[str, list[list[float]]] = {name: [] for name in order}
    for rep in range(repeats):
        shift = rep % len(order) if order else 0
        for name in order[shift:] + order[:shift]:
            times[name].append(call_times(workloads[name], iters, device, clock))
    return times


@dataclass(frozen=True)
class Spread:
    """Median with min and max over repetitions (the figures every benchmark reports)."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max}


def rates(per_rep_times: Sequence[Sequence[float]], items_per_call: int) -> list[float]:
    """Items per second of each repetition (all its calls together)."""
    return [items_per_call * len(t) / sum(t) for t in per_rep_times]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------
def oversubscription(threads: int, *, what: str = "this") -> str | None:
    """A one-line warning when ``threads`` CPU threads meet a machine already busy, else None.

    torch runs each CPU operation on ``threads`` threads that wait for each other when it ends;
    when other processes keep the cores busy, the waiting is for a descheduled thread, once per
    operation. Measured (README, "Threads"): the digits example trained at 2.7 s/epoch with
    ``OMP_NUM_THREADS=1`` and 35-72 s/epoch with 2, on 2 cores at load average 7-11. The load
    average (1 minute) counts this process too, so one unit of it is taken as ours.
    """
    try:
        cores = len(os.sched_getaffinity(0))
        others = max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):  # not Linux: no way to tell
        return None
    if threads < 2 or others + threads <= cores + 0.5:
        return None
    return (
        f"{threads} torch threads on {cores} cores of a busy machine (load average "
        f"{others + 1:.1f}): threads that wait for each other can make {what} many times "
        "slower; OMP_NUM_THREADS=1 (or the number of idle cores) is faster here"
    )


# --------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------
def proc_status_mib(field_name: str) -> float:
    """A memory field of /proc/self/status (Linux), in MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"{field_name} not in /proc/self/status")


def _trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``); False where
    there is no such call (another C library)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim is False:
        return False
    _malloc_trim(0)
    return True


_malloc_trim: Any = None


def peak_memory_mib(fn: Workload, device: str | torch.device = "cpu") -> float | None:
    """Peak memory of one call above what was held before it, in MiB (None where unknown).

    CUDA: ``max_memory_allocated`` minus the memory allocated before. CPU (Linux with glibc):
    the heap's free pages are returned to the system first (``malloc_trim``) -- after the
    warm-up calls the allocator keeps the memory they used resident, so the call would reuse it
    without raising the resident set and the peak read 0.0 -- then the resident-set high-water
    mark is reset (``5`` written to /proc/self/clear_refs) and ``VmHWM - VmRSS`` is reported;
    it includes allocator slack. Without glibc or /proc: None (unavailable), never a made-up 0.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        gc.collect()
        if not _trim_heap():
            return None
        before = proc_status_mib("VmRSS")
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        fn()
        return max(0.0, proc_status_mib("VmHWM") - before)
    except OSError:
        return None
