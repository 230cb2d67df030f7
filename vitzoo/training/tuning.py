"""What ``train.freeze`` / ``train.lora`` do to a model before its objective and optimiser are
made: one entry point over the two ways of training only part of a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from vitzoo.training.freeze import apply_freeze
from vitzoo.training.lora import apply_lora


def tune_model(spec: Any, model: nn.Module, log: Callable[[str], None]) -> None:
    """Apply the spec's ``train.freeze`` or ``train.lora`` to ``model`` (before the objective
    and optimiser are made, so frozen parameters never reach the optimiser)."""
    cfg = spec.train
    if cfg.lora is not None:
        names = apply_lora(model, cfg.lora)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(
            f"train.lora: rank {cfg.lora.rank} adapters on {len(names)} layers "
            f"({', '.join(sorted({n.rsplit('.', 1)[-1] for n in names}))}); "
            f"{trained:,} parameters trained"
        )
    elif cfg.freeze != "none":
        log(apply_freeze(model, cfg.freeze).summary(cfg.freeze))
