"""AdamW with decay only where it regularises, optional layer-wise learning-rate decay, and a
warmup + cosine learning-rate schedule.

The schedule is a pure function of the global step, so resuming needs no scheduler state; each
parameter group carries an ``lr_scale`` (1 without layer decay) that :func:`set_lr` applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from vitzoo.spec.sections import TrainConfig


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


def layer_decay_groups(
    named: Iterable[tuple[str, nn.Parameter]],
    no_decay: set[str],
    weight_decay: float,
    depths: dict[str, int],
    deepest: int,
    decay: float,
) -> list[dict]:
    """One group per (depth, decayed or not) with ``lr_scale = decay ** (deepest - depth)``.

    ``depths`` maps a name (as ``named`` spells it) to its layer; names it does not know
    (objective heads, decoders) train at the full rate, like the model's head. The layer
    decay of BEiT (Bao et al. 2022, arXiv:2106.08254), with depths from the model itself.
    """
    buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        depth = depths.get(name, deepest)
        decayed = not (param.ndim <= 1 or name in no_decay)
        buckets.setdefault((depth, decayed), []).append(param)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decayed else 0.0,
            "lr_scale": decay ** (deepest - depth),
            "layer": depth,
        }
        for (depth, decayed), params in sorted(buckets.items())
    ]


def model_depths(objective: nn.Module, model: nn.Module) -> tuple[dict[str, int], int]:
    """The model's parameter depths, keyed as ``objective.named_parameters`` spells them."""
    if hasattr(model, "parameter_layers"):
        layers, deepest = model.parameter_layers()
    else:  # a plain nn.Module: the generic reading of its module tree
        from vitzoo.components.model import parameter_layers

        layers, deepest = parameter_layers(model)
    by_id = {id(p): layers[n] for n, p in model.named_parameters() if n in layers}
    return {n: by_id[id(p)] for n, p in objective.named_parameters() if id(p) in by_id}, deepest


def make_optimizer(objective: nn.Module, model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    trainable = {id(p) for p in objective.trainable_parameters()}
    named = [(n, p) for n, p in objective.named_parameters() if id(p) in trainable]
    skip = no_decay_names(objective, model)
    if cfg.layer_decay is not None:
        depths, deepest = model_depths(objective, model)
        groups = layer_decay_groups(named, skip, cfg.weight_decay, depths, deepest, cfg.layer_decay)
    else:
        groups = param_groups(named, skip, cfg.weight_decay)
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
        group["lr"] = lr * group.get("lr_scale", 1.0)
