"""Multiply-accumulates of one forward pass, counted by torch, never estimated by hand.

``torch.utils.flop_counter.FlopCounterMode`` records the FLOPs of every matmul, convolution and
fused-attention call the forward actually dispatches; one multiply-accumulate is two FLOPs, so
MACs are half its total (the unit most ViT papers report as "FLOPs"). Element-wise work (norms,
activations, softmax) is not counted, as in fvcore and the papers' tables.

Counting runs on the meta device by default: shapes flow through every op but no memory is
allocated and nothing is computed, so even ViT-H counts in about a second. Grad mode stays on:
torch's module tracker (used by the counter) fails on some staged models under ``no_grad``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitzoo.builder import build_from_spec, resolve


def count_macs(model: nn.Module, x: torch.Tensor | None = None) -> int:
    """MACs of ``model(x)`` in eval mode; ``x`` defaults to one example input of the model."""
    if x is None:
        x = model.example_input(1)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def preset_macs(source: Any, **overrides: Any) -> int:
    """MACs of a preset / spec at its own input size, counted on the meta device: by the trial
    build that resolving the spec runs anyway, or (trial turned off) by a meta build here."""
    resolved = resolve(source, overrides, macs=True)
    if resolved.report is not None and resolved.report.macs is not None:
        return resolved.report.macs
    with torch.device("meta"):
        return count_macs(build_from_spec(resolved.spec))


def format_gmacs(macs: int) -> str:
    return f"{macs / 1e9:.2f}"


def format_macs(macs: int | None, suffix: str = "MACs") -> str:
    """``17.58 GMACs``, ``3.46 MMACs``, ``310 KMACs``: the unit that fits (a tiny model showed
    ``0.00 GMACs``); three significant digits. ``?`` when not counted."""
    if macs is None:
        return "?"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= scale:
            value = macs / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f} {unit}{suffix}"
    return f"{macs} {suffix}"
