"""Reference fixtures: a peer library's tiny model, perturbed, with its input and output.

Run in an environment where the peer library imports (``../shared/tools/reference-env/make.sh``
makes one with timm, vit-pytorch and transformers); the project's own tests never import the
peers, they read the files this writes. Each family module in this package declares
:class:`Fixture` entries; ``tools/make_reference_fixtures.py`` writes them under
``tests/data/reference/``.

Why perturb: zero biases, unit norms, identity BatchNorm statistics and 1e-5 LayerScale make
structurally different networks compute the same numbers. Every floating tensor of the state
dict gets noise (BatchNorm variances are redrawn positive), so only the same function agrees.

Why float64 outputs too: float32 rounding depends on the CPU (AVX2 and AVX-512 convolutions
differ by 6e-5 on logits of 200), so a float32 comparison needs a tolerance relative to the
output's scale, which a small structural bug can hide under. The same float32 weights and input,
upcast exactly and run as a user runs a float64 model (``model.double()``; tables the reference
makes in float32 stay so, as in its own float64 use), give an answer that every CPU reproduces
to ~1e-15, so ``tests/fidelity.py`` compares vitzoo's float64 run with it at 1e-9.
``Fixture.float64=False`` marks a reference that cannot run in float64.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

#: Where the fixtures live in the repository.
FIXTURE_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference"
STATE_PREFIX = "state."
#: Prefix of the float64 run's outputs (``float64.output``, ``float64.output.0`` ...).
FLOAT64_PREFIX = "float64."


@dataclass(frozen=True)
class Fixture:
    """One reference model: how to construct it and what input to feed it."""

    #: File stem under tests/data/reference/, e.g. ``timm-cait``.
    name: str
    #: Builds the peer's model (e.g. ``lambda: timm.create_model("cait_xxs24_224", ...)``).
    build: Callable[[], nn.Module]
    #: Input shape including the batch axis.
    input_shape: tuple[int, ...]
    #: Which library and constructor call this is, recorded in the file for provenance.
    library: str = "timm"
    constructor: str = ""
    #: Anything a converter test needs to rebuild the vitzoo side (e.g. the timm kwargs).
    meta: dict[str, Any] = field(default_factory=dict)
    #: Noise added to every floating tensor (relative scale is not needed at tiny sizes).
    noise: float = 0.05
    seed: int = 0
    #: Also record the float64 run's outputs (False only where the reference cannot run float64).
    float64: bool = True


def perturb_(model: nn.Module, *, seed: int = 0, noise: float = 0.05) -> nn.Module:
    """Add seeded noise to every floating parameter and buffer (BatchNorm variances redrawn)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:
                tensor.add_(noise * torch.randn(tensor.shape, generator=generator))
    return model


def outputs_of(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eval-mode outputs, flattened to named tensors (a tuple output becomes output.0, ...)."""
    model.eval()
    with torch.no_grad():
        out = model(x)
    if isinstance(out, torch.Tensor):
        return {"output": out}
    return {f"output.{i}": t for i, t in enumerate(out)}


def float64_outputs_of(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same (float32-valued) weights and input run in float64, under ``FLOAT64_PREFIX``."""
    outputs = outputs_of(copy.deepcopy(model).double(), x.double())
    return {FLOAT64_PREFIX + k: v for k, v in outputs.items()}


def _library_version(library: str) -> str:
    """The library's version: its ``__version__``, else its installed distribution's
    (vit-pytorch has no ``__version__``), else ``?`` (code from a checkout)."""
    import importlib
    from importlib import metadata

    try:
        return str(importlib.import_module(library).__version__)
    except (ImportError, AttributeError):
        pass
    try:
        return metadata.version(library.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "?"


def write_fixture(fixture: Fixture, directory: Path = FIXTURE_DIR) -> Path:
    """Construct, perturb, run and save one fixture; returns the file written."""
    torch.manual_seed(fixture.seed)
    model = perturb_(fixture.build(), seed=fixture.seed, noise=fixture.noise)
    x = torch.randn(fixture.input_shape, generator=torch.Generator().manual_seed(fixture.seed + 1))
    tensors = {
        STATE_PREFIX + k: v.detach().contiguous().clone() for k, v in model.state_dict().items()
    }
    tensors["input"] = x
    tensors.update(outputs_of(model, x))
    if fixture.float64:
        tensors.update(float64_outputs_of(model, x))
    metadata = {
        "library": fixture.library,
        "constructor": fixture.constructor,
        "meta": json.dumps(fixture.meta),
        "seed": str(fixture.seed),
        "noise": str(fixture.noise),
        "torch": torch.__version__,
    }
    metadata["library_version"] = _library_version(fixture.library)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{fixture.name}.safetensors"
    # outputs may be views (a slice of the tokens); safetensors stores contiguous tensors
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path
