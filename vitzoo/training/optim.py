"""AdamW with decay only where it regularises, and a warmup + cosine learning-rate schedule.

The schedule is a pure function of the global step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from vitzoo.training.config import TrainConfig


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]], no_decay_names: set[str], weight_decay: float
) -> list[dict]:
    """Two groups: decayed matrices, and undecayed norms/biases/positions/tokens (1-D or named).

    Decaying a LayerNorm gain or a position table pulls it towards zero, which only hurts.
    """
    decay, keep = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in no_decay_names:
            keep.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    return groups


def no_decay_names(objective: nn.Module, model: nn.Module) -> set[str]:
    """Names (as ``objective.named_parameters`` spells them) the model marks as no-decay."""
    model_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    out = set()
    for name, _ in objective.named_parameters():
        if name.removeprefix("model.") in model_names or name in model_names:
            out.add(name)
    return out


def make_optimizer(objective: nn.Module, model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    trainable = {id(p) for p in objective.trainable_parameters()}
    named = [(n, p) for n, p in objective.named_parameters() if id(p) in trainable]
    groups = param_groups(named, no_decay_names(objective, model), cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def lr_at(step: int, total_steps: int, warmup_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup from ~0 to ``lr``, then half a cosine down to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
