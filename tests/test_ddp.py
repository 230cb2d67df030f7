"""Data-parallel training: ``torchrun --nproc_per_node=2 -m vitzoo train`` (gloo on CPU) ends
with the same weights as one process training on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from training_helpers import TINY_SPEC, make_dataset

from vitzoo.checkpoint import read_checkpoint
from vitzoo.training.trainer import train


def test_two_processes_match_one(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=8, val_per_class=3)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps(TINY_SPEC))
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "vitzoo", "train", str(spec), "--data", str(data), "--out", str(tmp_path / "ddp"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on 2 x cpu" in done.stderr  # one log (rank 0), reporting both processes
    assert done.stderr.count("done:") == 1, done.stderr  # the result too (issue 20, item 8)

    single = train(TINY_SPEC, data, out=tmp_path / "single")
    ddp_weights = read_checkpoint(tmp_path / "ddp" / "last.safetensors")[0]
    one_weights = read_checkpoint(single.run_dir / "last.safetensors")[0]
    for key, value in one_weights.items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
    ddp_history = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp_history[-1]["val_accuracy"] == single.history[-1]["val_accuracy"]
