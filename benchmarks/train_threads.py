"""Seconds per training epoch at several CPU thread counts: how many threads to give torch here.

    python benchmarks/train_threads.py --data data/digits --threads 1 2 --epochs 3 --repeats 2

Each run is ``vitzoo train SPEC --epochs N`` in a fresh process with ``OMP_NUM_THREADS`` set
(``unset`` leaves torch's default: the physical cores); runs are interleaved (1, 2, 1, 2, ...)
so load that drifts hits every thread count alike. Per run it prints the seconds of each epoch
(``metrics.json``) and the 1-minute load average when it ended.

Why it matters: torch runs each CPU operation on all its threads, which wait for each other
when the operation ends. On a machine whose cores other processes keep busy, that wait is for
a descheduled thread, once per operation, and a small model runs thousands of small
operations per epoch. On the project's 2-core machine at load average 7-12 the digits example
took 2.6-4.9 s per epoch with 1 thread and 35-72 s with 2 (README, "Threads"). Choose
``OMP_NUM_THREADS`` = the cores that are idle (1 on a shared machine); on an idle machine
torch's default (all physical cores) is right.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(spec: str, data: str, epochs: int, threads: str, out: Path) -> list[float]:
    """Seconds of each epoch of one ``vitzoo train`` run with ``threads`` torch threads."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads != "unset":
        env["OMP_NUM_THREADS"] = threads
    command = [sys.executable, "-m", "vitzoo", "train", spec, "--data", data, "--out", str(out)]
    command += ["--epochs", str(epochs)]
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    history = json.loads((out / "metrics.json").read_text())
    return [float(row["seconds"]) for row in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "digits.yaml"))
    parser.add_argument("--data", required=True, help="e.g. data/digits (make_digits_dataset.py)")
    parser.add_argument("--threads", nargs="+", default=["1", "2"], help="counts, or 'unset'")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for threads in args.threads:
                out = Path(tmp) / f"run-{threads}-{repeat}"
                seconds = run_once(args.spec, args.data, args.epochs, threads, out)
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                rows.append(
                    {"threads": threads, "repeat": repeat, "seconds": seconds, "load": load}
                )
                print(
                    f"threads {threads:>5}  repeat {repeat}  s/epoch "
                    f"{', '.join(f'{s:.1f}' for s in seconds)}  load average {load:.1f}",
                    flush=True,
                )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
