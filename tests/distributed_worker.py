"""One process of a multi-process test run (tests/test_fsdp.py), started by torchrun or by
the test itself with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set.

``python distributed_worker.py PLAN.json`` runs the plan's training jobs one after another in
one process group (starting processes costs seconds each; the jobs share them), then leaves.
A job is ``{"spec", "data", "out", "set", "resume"}`` for :func:`vitzoo.training.train`, or
``{"cli": [...]}`` for the ``vitzoo`` command line (which exits when done). A job may inject
one fault, on one rank:

* ``{"kind": "kill-in-save", "rank": 1, "save": 2}``: that rank writes its shards of the job's
  ``save``-th sharded state, then SIGKILLs itself before the state is complete;
* ``{"kind": "stall", "rank": 1, "step": 2}``: that rank stops responding (sleeps) at its
  ``step``-th training step, as a hung process would.

A plan with ``"own_group": true`` lets the jobs create their process group themselves (so the
run's ``train.dist_timeout`` applies); otherwise the worker creates one for all jobs.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from vitzoo.training import run as training_run
from vitzoo.training.trainer import train


def kill_in_save(rank: int, save: int) -> None:
    """Make ``rank`` die by SIGKILL right after writing its shards of the ``save``-th state."""
    real = dcp.FileSystemWriter.write_data
    seen = {"saves": 0}

    def write_data(self: Any, plan: Any, planner: Any) -> Any:
        result = real(self, plan, planner)
        seen["saves"] += 1
        if int(os.environ["RANK"]) == rank and seen["saves"] == save:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    dcp.FileSystemWriter.write_data = write_data  # type: ignore[method-assign]


def stall(rank: int, step: int) -> None:
    """Make ``rank`` hang (alive, silent) at its ``step``-th training step."""
    real = training_run.TrainingRun.train_step
    seen = {"steps": 0}

    def train_step(self: Any, images: Any, targets: Any) -> Any:
        seen["steps"] += 1
        if int(os.environ["RANK"]) == rank and seen["steps"] == step:
            print(f"rank {rank}: stalling", file=sys.stderr, flush=True)
            time.sleep(3600)
        return real(self, images, targets)

    training_run.TrainingRun.train_step = train_step  # type: ignore[method-assign]


def inject(fault: dict[str, Any]) -> None:
    if fault.get("kind") == "kill-in-save":
        kill_in_save(fault["rank"], fault["save"])
    elif fault.get("kind") == "stall":
        stall(fault["rank"], fault["step"])


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    shared = not plan.get("own_group", False)
    if shared:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    for job in plan["jobs"]:
        inject(job.get("fault") or {})
        if "cli" in job:
            from vitzoo.cli import main as vitzoo_main

            vitzoo_main(job["cli"])
            continue
        train(
            job["spec"],
            job["data"],
            out=job["out"],
            resume=job.get("resume", False),
            overrides=job.get("set"),
        )
    if shared:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
