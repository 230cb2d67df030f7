"""Sharded training (``train.strategy: fsdp``, PyTorch FSDP2) and its run state, on CPU/gloo.

In one process (a one-rank gloo group, no spawn): every registered architecture and objective
gives the same outputs, gradients and updates sharded as unsharded; precision, offload and
gradient checkpointing; the DCP state of a one-process fsdp run resumes bit-exactly.

Across processes (few launches, each costs seconds): two fsdp processes train like two ddp
processes and like one process, for a ViT and a hierarchical model; a rank SIGKILLed in the
middle of writing a sharded state leaves the previous one for ``--resume``, which continues
at world size 1 and 3 to the uninterrupted run's weights; a rank that stops responding ends
the job with a plain error after ``train.dist_timeout``.

Tolerances: sharded and unsharded at one rank, and fsdp and ddp at two ranks, agree to
rtol 1e-6 / atol 1e-7 (observed: bit-identical). Another world size sums the gradient mean in
another order; AdamW divides each gradient by its own running magnitude, so on weights whose
gradient is ~0 (the key bias, which softmax ignores) that float noise becomes steps of the
order of the learning rate: weights agree to atol 1e-4 / rtol 1e-4 (the 4 steps at lr 3e-3
move a weight by up to ~1e-2; observed differences <= 4e-5, the same for ddp) and epoch losses
to 1e-5 relative.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, OffloadPolicy
from torch.distributed.tensor import DTensor
from training_helpers import TINY_SPEC, make_dataset

from vitzoo.builder import build_from_spec, resolve_spec
from vitzoo.checkpoint import CheckpointError, read_checkpoint
from vitzoo.components.model import shard_units
from vitzoo.spec import SpecError
from vitzoo.testing.checks import seeded
from vitzoo.testing.objective_checks import as_case
from vitzoo.testing.variants import variants
from vitzoo.training.run import TrainingRun
from vitzoo.training.sharded_state import RUN_FILE, MetadataCheckingReader
from vitzoo.training.sharding import Sharding, gathered, precision_policy
from vitzoo.training.state import STATE_KEY
from vitzoo.training.trainer import TrainingInterrupted, train

WORKER = Path(__file__).with_name("distributed_worker.py")
SAME = {"rtol": 1e-6, "atol": 1e-7}
ACROSS_WORLDS = {"rtol": 1e-4, "atol": 1e-4}

#: batch 6 splits over 1, 2 and 3 processes; EMA and layer decay ride along.
VIT = {
    **TINY_SPEC,
    "train": {**TINY_SPEC["train"], "batch_size": 6, "ema_decay": 0.9, "layer_decay": 0.8},
}
#: A two-stage hierarchical model, with gradient accumulation (2 micro-batches per step).
HIER = {
    "model": {
        "type": "twins-svt",
        "image_size": 32,
        "dims": [16, 32],
        "depths": [2, 2],
        "num_heads": [1, 2],
        "patch_sizes": [4, 2],
        "windows": [4, 2],
        "sr_ratios": [2, 1],
        "num_classes": 2,
    },
    "train": {**TINY_SPEC["train"], "accumulation_steps": 2},
    "data": TINY_SPEC["data"],
}
FSDP = {"train.strategy": "fsdp"}


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def assert_same_weights(a: Path, b: Path, tolerance: dict[str, float]) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], **tolerance, msg=key)


def losses(run_dir: Path) -> list[float]:
    return [row["train_loss"] for row in json.loads((run_dir / "metrics.json").read_text())]


# --------------------------------------------------------------------------------------------
# One process: a one-rank group shards exactly like N ranks do, without spawning anything
# --------------------------------------------------------------------------------------------
@pytest.fixture
def one_rank() -> Any:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def sharding(mesh: Any, precision: str = "fp32", offload: bool = False) -> Sharding:
    policy = CPUOffloadPolicy(pin_memory=False) if offload else OffloadPolicy()
    return Sharding(mesh, precision_policy(precision), policy, True)


@pytest.fixture(autouse=True)
def _quiet_view_warnings() -> Any:
    # FSDP2 warns once per unit that returns a view (an in-place op on it would skip a
    # gather); no vitzoo model changes a unit's output in place -- the gradients below prove it
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*returned a view tensor")
        yield


@pytest.mark.parametrize("variant", variants(kind="architecture"), ids=lambda v: v.name)
def test_every_architecture_shards_into_its_units(variant: Any, one_rank: Any) -> None:
    """shard_units finds every architecture's blocks through the model protocol, and the
    sharded model computes the same outputs and gradients (a unit used outside its own call
    -- ATS's budgeted layers -- would fail here)."""
    reference = variant.build(0).train()
    model = copy.deepcopy(reference)
    units = shard_units(model)
    assert units, f"{variant.name}: no shardable units"
    sharding(one_rank).shard(model)
    assert all(isinstance(model.get_submodule(u), FSDPModule) for u in units)
    assert all(isinstance(p, DTensor) for p in model.parameters())
    x = reference.example_input(2)
    outputs = []
    for m in (reference, model):
        with seeded(3):
            out = m(x)
        out = out[0] if isinstance(out, tuple) else out
        out.float().square().mean().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1], outputs[0], **SAME)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        if q.grad is not None:
            torch.testing.assert_close(full(p.grad), q.grad, **SAME, msg=name)


@pytest.mark.parametrize("variant", variants(kind="objective"), ids=lambda v: v.name)
def test_every_objective_trains_the_same_sharded(variant: Any, one_rank: Any) -> None:
    """Two steps of each objective (loss, gradients, update, after_step) sharded as unsharded:
    DINO's EMA teacher is sharded and updated shard by shard; distillation's frozen teacher
    stays a plain replicated module; MAE's encoder path (embed/encode, not forward) works
    because the objective is the root that gathers the model's non-block parameters."""
    case = as_case(variant)
    reference = case.build(0)
    objective = copy.deepcopy(reference)
    images, targets = case.batch(reference)
    sharding(one_rank).shard(objective)
    teacher = getattr(objective, "teacher", None)
    if teacher is not None and "teacher" not in dict(objective.named_children()):
        assert not any(isinstance(p, DTensor) for p in teacher.parameters())  # replicated
    for _ in range(2):
        result = []
        for o in (reference, objective):
            with seeded(7):
                out = o(images, targets)
            out.loss.backward()
            result.append(out.loss.detach())
            with torch.no_grad():
                for p in o.parameters():
                    if p.grad is not None:
                        p.sub_(0.1 * p.grad)
                        p.grad = None
            o.after_step()
        torch.testing.assert_close(result[1], result[0], **SAME)
    for (name, p), q in zip(objective.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(full(p), q, **SAME, msg=name)
    with torch.no_grad(), gathered(objective):  # validation runs the model outside the root
        objective.model.eval()(images)
    assert all(isinstance(p, DTensor) for p in objective.parameters())


def test_precision_offload_and_checkpointing(one_rank: Any) -> None:
    """bf16: blocks compute with bf16 copies of fp32 master shards, gradients come back fp32;
    CPU offload keeps shards in host memory; recomputing blocks (gradient checkpointing)
    under sharding gives the plain model's gradients."""
    spec = resolve_spec({"model": TINY_SPEC["model"] | {"depth": 2}})
    reference = build_from_spec(spec).train()
    seen: list[torch.dtype] = []
    for precision, offload in (("bf16", False), ("fp32", True)):
        model = sharding(one_rank, precision, offload).shard(copy.deepcopy(reference))
        hook = model.blocks[0].attn.register_forward_pre_hook(
            lambda m, args: seen.append(next(m.parameters()).dtype)
        )
        model(reference.example_input(2)).sum().backward()
        hook.remove()
        assert all(
            p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters()
        )
        assert all(p.device.type == "cpu" for p in model.parameters())
    assert seen == [torch.bfloat16, torch.float32]
    checkpointed = sharding(one_rank).shard(copy.deepcopy(reference))
    checkpointed.set_grad_checkpointing(True)
    x = reference.example_input(2)
    for m in (reference, checkpointed):
        m(x).square().mean().backward()
    for p, q in zip(checkpointed.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(full(p.grad), q.grad, **SAME)


def test_fsdp_options_need_the_fsdp_strategy() -> None:
    with pytest.raises(SpecError, match=r"train.fsdp_cpu_offload.*strategy: fsdp"):
        resolve_spec(TINY_SPEC, {"train.fsdp_cpu_offload": True})
    with pytest.raises(SpecError, match=r"train.strategy"):
        resolve_spec(TINY_SPEC, {"train.strategy": "zero3"})
    assert resolve_spec(TINY_SPEC, {**FSDP, "train.fsdp_cpu_offload": True}).train.strategy


def test_run_state_index_is_never_unpickled_beyond_dcp_classes(tmp_path: Path) -> None:
    """DCP's .metadata is a pickle; resuming reads it allowing only DCP's own classes."""
    folder = tmp_path / "state-0001.dcp"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(os.system))  # would run code on load
    with pytest.raises(CheckpointError, match=r"posix.system.*refusing"):
        MetadataCheckingReader(folder).read_metadata()


def test_one_process_fsdp_state_resumes_bit_exactly_mid_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """strategy fsdp on one process: nothing to shard, but the run state is the same DCP
    folder a sharded run writes (so runs move between world sizes); Ctrl-C inside an epoch
    saves it and --resume continues bit-exactly."""
    data = make_dataset(tmp_path / "data", per_class=6, val_per_class=3)
    whole = train(VIT, data, epochs=2, out=tmp_path / "whole", overrides=FSDP)
    real_step = TrainingRun.train_step
    calls = {"n": 0}

    def interrupted_step(self: TrainingRun, images: Any, targets: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:  # the second step of epoch 2
            raise KeyboardInterrupt
        return real_step(self, images, targets)

    monkeypatch.setattr(TrainingRun, "train_step", interrupted_step)
    with pytest.raises(TrainingInterrupted) as stop:
        train(VIT, data, epochs=2, out=tmp_path / "part", overrides=FSDP)
    assert stop.value.saved and (stop.value.epoch, stop.value.epoch_step) == (1, 1)
    monkeypatch.setattr(TrainingRun, "train_step", real_step)
    named = read_checkpoint(tmp_path / "part" / "last.safetensors", tensors=False)[1][STATE_KEY]
    assert named.endswith(".dcp") and (tmp_path / "part" / named / RUN_FILE).is_file()
    resumed = train(VIT, data, epochs=2, out=tmp_path / "part", resume=True, overrides=FSDP)
    for name in ("last.safetensors", "ema.safetensors", "best.safetensors"):
        a, b = weights(whole.run_dir / name), weights(resumed.run_dir / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert losses(whole.run_dir) == losses(resumed.run_dir)


def test_a_frozen_backbone_trains_sharded_as_unsharded_and_its_output_exports(
    tmp_path: Path,
) -> None:
    """train.freeze with strategy fsdp: the frozen tensors come out bit-identical to the
    unsharded run's (nothing trains them), the head within float noise; last.safetensors is
    one ordinary checkpoint that vitzoo.load reads and vitzoo export turns into a program."""
    from click.testing import CliRunner

    import vitzoo
    from vitzoo.cli import cli

    data = make_dataset(tmp_path / "data", per_class=4, val_per_class=2)
    frozen = {"train.freeze": "backbone", "train.ema_decay": None}
    plain = train(VIT, data, epochs=1, out=tmp_path / "plain", overrides=frozen)
    sharded = train(VIT, data, epochs=1, out=tmp_path / "fsdp", overrides={**FSDP, **frozen})
    a = weights(plain.run_dir / "last.safetensors")
    b = weights(sharded.run_dir / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("head."):
            torch.testing.assert_close(b[key], a[key], **SAME, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key
    model = vitzoo.load(sharded.run_dir / "last.safetensors").eval()
    assert model(model.example_input(2)).shape == (2, 2)
    program = tmp_path / "model.pt2"
    result = CliRunner().invoke(
        cli, ["export", str(sharded.run_dir / "last.safetensors"), "-o", str(program)]
    )
    assert result.exit_code == 0, result.output
    assert program.is_file()


# --------------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------------
def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", *args,
    ]  # fmt: skip
    return subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One torchrun launch of two processes for four runs (ViT and hierarchical, ddp and
    fsdp) and a fifth fsdp run whose rank 1 is SIGKILLed while writing its second state,
    which ends the launch."""
    root = tmp_path_factory.mktemp("fsdp")
    data = make_dataset(root / "data", per_class=6, val_per_class=3)
    (root / "vit.yaml").write_text(json.dumps(VIT))
    jobs: list[dict[str, Any]] = [
        {"spec": VIT, "data": str(data), "out": str(root / "vit-ddp")},
        {"spec": VIT, "data": str(data), "out": str(root / "vit-fsdp"), "set": FSDP},
        {"spec": HIER, "data": str(data), "out": str(root / "hier-ddp")},
        {"spec": HIER, "data": str(data), "out": str(root / "hier-fsdp"), "set": FSDP},
        {
            "spec": VIT,
            "data": str(data),
            "out": str(root / "killed"),
            "set": FSDP,
            "fault": {"kind": "kill-in-save", "rank": 1, "save": 2},
        },
    ]
    plan = root / "plan.json"
    plan.write_text(json.dumps({"jobs": jobs}))
    launch = torchrun(2, str(WORKER), str(plan))
    return {"root": root, "data": data, "launch": launch}


@pytest.mark.parametrize("name,spec", [("vit", VIT), ("hier", HIER)])
def test_two_fsdp_processes_match_two_ddp_and_one(
    two_process_runs: dict[str, Any], name: str, spec: dict[str, Any], tmp_path: Path
) -> None:
    root, launch = two_process_runs["root"], two_process_runs["launch"]
    fsdp, ddp = root / f"{name}-fsdp", root / f"{name}-ddp"
    assert (fsdp / "last.safetensors").is_file(), launch.stderr[-3000:]
    assert "(fsdp: weights, gradients and optimiser state sharded)" in launch.stderr
    single = train(spec, two_process_runs["data"], out=tmp_path / "one")
    for file in ("last.safetensors", "best.safetensors"):
        assert_same_weights(fsdp / file, ddp / file, SAME)
        assert_same_weights(fsdp / file, single.run_dir / file, ACROSS_WORLDS)
    assert losses(fsdp) == pytest.approx(losses(ddp), rel=1e-6)
    assert losses(fsdp) == pytest.approx(losses(single.run_dir), rel=1e-5)
    if name == "vit":  # the EMA, sharded like the model, averages the same weights
        assert_same_weights(fsdp / "ema.safetensors", ddp / "ema.safetensors", SAME)


def test_rank_killed_mid_save_resumes_at_world_sizes_1_and_3(
    two_process_runs: dict[str, Any], tmp_path: Path
) -> None:
    root, launch, data = (
        two_process_runs["root"],
        two_process_runs["launch"],
        two_process_runs["data"],
    )
    killed, whole = root / "killed", root / "vit-fsdp"
    assert launch.returncode != 0 and "SIGKILL" in launch.stderr, launch.stderr[-3000:]
    # the epoch-2 state was half written: last.safetensors still names epoch 1's
    named = read_checkpoint(killed / "last.safetensors", tensors=False)[1][STATE_KEY]
    assert named == "state-0001.dcp" and (killed / named / ".metadata").is_file()
    (partial,) = killed.glob(".state-0002.dcp.partial")
    assert (partial / "__1_0.distcp").is_file() and not (partial / RUN_FILE).exists()

    one, three = tmp_path / "one", tmp_path / "three"
    shutil.copytree(killed, one)
    shutil.copytree(killed, three)
    resumed = train(VIT, data, out=one, resume=True, overrides=FSDP)
    assert not list(one.glob(".*.partial"))  # the next save cleared it
    command = [
        "-m", "vitzoo", "train", str(root / "vit.yaml"), "--data", str(data),
        "--out", str(three), "--resume", "--set", "train.strategy=fsdp",
    ]  # fmt: skip
    done = torchrun(3, *command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr and "on 3 x cpu (fsdp" in done.stderr
    for run in (resumed.run_dir, three):
        for file in ("last.safetensors", "ema.safetensors", "best.safetensors"):
            assert_same_weights(run / file, whole / file, ACROSS_WORLDS)
        assert losses(run) == pytest.approx(losses(whole), rel=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stalled_rank_ends_the_job_with_a_plain_error(tmp_path: Path) -> None:
    """Rank 1 stops responding at its first step; rank 0 gives up after train.dist_timeout
    with one plain line and a failing exit status instead of waiting forever."""
    data = make_dataset(tmp_path / "data", per_class=4, val_per_class=2)
    (tmp_path / "vit.yaml").write_text(json.dumps(TINY_SPEC))
    cli = [
        "train", str(tmp_path / "vit.yaml"), "--data", str(data), "--out", str(tmp_path / "run"),
        "--set", "train.strategy=fsdp", "--set", "train.dist_timeout=15",
    ]  # fmt: skip
    plan = tmp_path / "plan.json"
    job = {"cli": cli, "fault": {"kind": "stall", "rank": 1, "step": 1}}
    plan.write_text(json.dumps({"own_group": True, "jobs": [job]}))
    env = clean_env() | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(plan)],
            env=env | {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    try:
        started = time.monotonic()
        _, err = ranks[0].communicate(timeout=240)
        waited = time.monotonic() - started
    finally:
        for process in ranks:
            process.kill()
            process.communicate()
    assert ranks[0].returncode not in (0, None), err[-3000:]
    assert "rank 0 of 2: another process of this run died or stopped responding" in err
    assert "train.dist_timeout=15 s" in err and "Timed out" in err and "Traceback" not in err
    assert waited < 200
