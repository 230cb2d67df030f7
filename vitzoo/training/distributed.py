"""Data-parallel set-up from the environment torchrun provides (RANK, WORLD_SIZE, LOCAL_RANK).

A single process needs none of it; under ``torchrun --nproc_per_node=N`` the same command joins
a process group (NCCL on GPUs, gloo on CPU) and only rank 0 writes files.

The group is created with a timeout (``train.dist_timeout``): a process that waits longer than
that for the others -- one died or hangs -- raises, and :func:`lost_peer` /
:func:`peer_failure` turn the backend's message into one plain :class:`DistributedError`, so
the job stops (torchrun then stops the other processes) instead of hanging forever.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vitzoo.errors import DistributedError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    initialised_here: bool
    #: Seconds a collective waits for the other processes before failing.
    timeout: float | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup(device_name: str, timeout: float | None = None) -> DistInfo:
    """Join the process group torchrun describes (if any) and choose this process's device.

    ``timeout`` (seconds) bounds every wait on the other processes, the rendezvous included.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = pick_device(device_name, local_rank)
    initialised_here = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        wait = datetime.timedelta(seconds=timeout) if timeout is not None else None
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=wait)
        initialised_here = True
    return DistInfo(rank, world, local_rank, device, initialised_here, timeout)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


#: How gloo, NCCL and the rendezvous store word a peer that is gone or too slow.
_LOST_PEER = (
    "timed out",
    "timeout",
    "connection reset",
    "connection closed",
    "connection refused",
    "broken pipe",
    "nccl error",
)


def lost_peer(exc: BaseException, info: DistInfo) -> bool:
    """Whether ``exc`` means another process of this multi-process run is gone or stuck."""
    if not info.enabled or isinstance(exc, DistributedError):
        return False
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _LOST_PEER)


def peer_failure(exc: BaseException, info: DistInfo) -> DistributedError:
    """One plain line for a run whose processes stopped hearing from each other."""
    # gloo prefixes its messages with its own source location: not for the user
    detail = re.sub(r"^\[[^\]]*\]\s*", "", " ".join(str(exc).split()))
    if len(detail) > 240:
        detail = detail[:237] + "..."
    waited = f"more than train.dist_timeout={info.timeout:g} s " if info.timeout else ""
    return DistributedError(
        f"rank {info.rank} of {info.world}: another process of this run died or stopped "
        f"responding (waited {waited}for it); look for the first error in the other ranks' "
        f"output. Backend said: {detail}"
    )
