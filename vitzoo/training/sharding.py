"""Sharded data parallelism (``train.strategy: fsdp``): PyTorch's FSDP2 over the model protocol.

Why: DDP keeps every parameter, gradient and AdamW moment on every process, about 16 bytes per
parameter; FSDP keeps 1/N of each on each of N processes and gathers a unit's full parameters
only while that unit runs, which is what lets a 1-3 B-parameter model train at all.

How an objective is sharded (:meth:`Sharding.shard`): every unit
:func:`~vitzoo.components.model.shard_units` lists -- the model's blocks (stage blocks of a
hierarchical model), found through the model protocol for every architecture, and likewise the
blocks of an EMA teacher or a decoder -- becomes its own FSDP group; then the objective itself
is the root group holding the rest (patch embedding, positions, norms, heads, projectors). The
root is gathered when the objective's forward starts, so an objective may call any model
method (MAE's ``embed``/``encode``), not only ``forward``. Code that runs the model outside the
objective's forward (validation) holds the root gathered with :func:`gathered`.

Mixed precision (:func:`precision_policy`): with ``train.precision`` bf16/fp16 the gathered
parameters and the compute are in that type, gradients are reduced in fp32, and the sharded
master weights and optimiser state stay fp32. ``train.fsdp_cpu_offload`` keeps the shards (and
so the optimiser step) in host memory.

Decisions: an EMA of the weights (``train.ema_decay``) and DINO's EMA teacher are sharded like
the model they follow -- the same placements on the same mesh, so the update is a local
element-wise operation on each shard, with no communication and 1/N of the memory (an EMA
gathered on rank 0 would cost a full model copy there and a gather after every step). The
distillation teacher is replicated (each process keeps the whole frozen teacher): it holds no
gradients or optimiser state (4 bytes per parameter against the student's 16), and sharding it
would add an all-gather of every teacher weight to every micro-step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)
from torch.distributed.tensor import DTensor

from vitzoo.components.model import shard_units
from vitzoo.spec.sections import TrainConfig
from vitzoo.training.distributed import DistInfo

#: The parameter (and compute) type each ``train.precision`` gathers in; None keeps fp32.
_PARAM_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_policy(precision: str) -> MixedPrecisionPolicy:
    """bf16/fp16 parameters and compute, fp32 gradient reduction; fp32 everywhere for fp32.

    The sharded parameters FSDP keeps (the master weights the optimiser updates) stay in their
    own type, fp32; only the gathered copies are cast.
    """
    dtype = _PARAM_DTYPES[precision]
    return MixedPrecisionPolicy(
        param_dtype=dtype, reduce_dtype=torch.float32 if dtype is not None else None
    )


@dataclass(frozen=True)
class Sharding:
    """How this run shards modules: over which processes, in which precision, where kept."""

    mesh: DeviceMesh
    mp_policy: MixedPrecisionPolicy
    offload_policy: OffloadPolicy
    reshard_after_forward: bool

    def shard(self, module: nn.Module) -> nn.Module:
        """Each unit of ``module`` its own group, then ``module`` the root (in place)."""
        options = {
            "mesh": self.mesh,
            "mp_policy": self.mp_policy,
            "offload_policy": self.offload_policy,
        }
        for unit in shard_units(module):
            fully_shard(
                module.get_submodule(unit),
                reshard_after_forward=self.reshard_after_forward,
                **options,
            )
        fully_shard(module, **options)
        return module


def make_sharding(cfg: TrainConfig, info: DistInfo) -> Sharding | None:
    """The run's sharding; None unless ``strategy: fsdp`` with more than one process (one
    process has nothing to share, and trains exactly as without a strategy)."""
    if cfg.strategy != "fsdp" or not info.enabled:
        return None
    mesh = init_device_mesh(info.device.type, (info.world,))
    offload = (
        CPUOffloadPolicy(pin_memory=info.device.type == "cuda")
        if cfg.fsdp_cpu_offload
        else OffloadPolicy()
    )
    return Sharding(mesh, precision_policy(cfg.precision), offload, cfg.fsdp_reshard_after_forward)


def move_unsharded(module: nn.Module, device: torch.device) -> None:
    """Move what FSDP does not manage (buffers, a replicated teacher) to ``device``; the
    shards stay where FSDP put them (on the device, or in host memory when offloaded)."""
    module._apply(lambda t: t if isinstance(t, DTensor) else t.to(device))


def fsdp_modules(module: nn.Module) -> Iterator[FSDPModule]:
    return (m for m in module.modules() if isinstance(m, FSDPModule))


def reshard_all(module: nn.Module) -> None:
    """Free every gathered parameter under ``module``.

    FSDP keeps a root's parameters gathered after a forward (backward needs them next); after
    a forward without backward (validation) nothing would free them, and the next EMA update
    or state dict would see full tensors where shards belong.
    """
    for unit in fsdp_modules(module):
        unit.reshard()


@contextlib.contextmanager
def gathered(root: nn.Module) -> Iterator[None]:
    """Run parts of a sharded ``root`` outside its forward (validation of ``root.model``):
    the root group is gathered for the duration; the units gather themselves when called."""
    assert isinstance(root, FSDPModule)
    root.unshard()
    try:
        yield
    finally:
        reshard_all(root)


@contextlib.contextmanager
def accumulating(root: nn.Module, last: bool) -> Iterator[None]:
    """A micro-step of gradient accumulation: before the last one, gradients stay unsharded
    and unreduced (no reduce-scatter) and parameters stay gathered after backward (no second
    gather for the next forward); the last micro-step reduces the summed gradient once."""
    if last:
        yield
        return
    assert isinstance(root, FSDPModule)
    root.set_requires_gradient_sync(False)
    root.set_reshard_after_backward(False)
    try:
        yield
    finally:
        root.set_requires_gradient_sync(True)
        root.set_reshard_after_backward(True)


def full_state_dict(module: nn.Module, info: DistInfo) -> dict[str, torch.Tensor]:
    """``module``'s full state dict on rank 0 (CPU tensors; empty on the other ranks).

    Every rank must call it (the shards are gathered one tensor at a time, each straight to
    host memory, so no device ever holds the whole model). Without sharding it is the plain
    state dict.
    """
    if not any(isinstance(p, DTensor) for p in module.parameters()):
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    reshard_all(module)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(module, options=options)
    return state if info.is_main else {}
