"""Read the reference fixtures written by ``tools/make_reference_fixtures.py``.

A fixture holds a peer library's perturbed state dict (its own key names), a fixed input and the
peer's eval-mode output, in float32 and (the same weights and input upcast) in float64; tests
convert the state dict into vitzoo and require the same outputs (the rule: ``tests/fidelity.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

FIXTURE_DIR = Path(__file__).resolve().parent / "data" / "reference"
STATE_PREFIX = "state."
FLOAT64_PREFIX = "float64."


@dataclass(frozen=True)
class ReferenceFixture:
    name: str
    state_dict: dict[str, torch.Tensor]
    input: torch.Tensor
    #: ``output`` for a single tensor, ``output.0``/``output.1`` for tuple outputs (float32 run).
    outputs: dict[str, torch.Tensor]
    metadata: dict[str, str]
    #: The same names from the float64 run (empty where the reference cannot run float64).
    outputs64: dict[str, torch.Tensor]

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.metadata.get("meta", "{}"))

    @property
    def output(self) -> torch.Tensor:
        return self.outputs["output"]


def load_reference(name: str) -> ReferenceFixture:
    path = FIXTURE_DIR / f"{name}.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    state = {k[len(STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    outputs = {k: v for k, v in tensors.items() if k.startswith("output")}
    outputs64 = {
        k[len(FLOAT64_PREFIX) :]: v for k, v in tensors.items() if k.startswith(FLOAT64_PREFIX)
    }
    return ReferenceFixture(name, state, tensors["input"], outputs, metadata, outputs64)


def max_abs_diff(a: Any, b: torch.Tensor) -> float:
    """How far apart two outputs are; for the "a planted change computes something else" checks
    (the same-function rule itself is ``fidelity.assert_matches_reference``)."""
    if isinstance(a, tuple | list):
        a = a[0]
    return (a.detach().double() - b.double()).abs().max().item()
