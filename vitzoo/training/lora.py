"""``train.lora``: low-rank adapters through Hugging Face ``peft``, saved merged.

peft (the ``lora`` extra) replaces each targeted ``nn.Linear`` in place by a LoRA layer holding
the frozen ``base_layer`` and the trainable ``lora_A`` / ``lora_B`` (Hu et al. 2021,
arXiv:2106.09685). A fused qkv projection (every ViT here) is adapted as one layer, as peft
does (its issue #691 asks for adapters on parts of a fused projection, which peft does not
offer; neither does vitzoo).

What leaves the run is always an ordinary vitzoo checkpoint: a state-dict hook on the model
gives ``W + (alpha / r) B A`` under the plain layer's key (``blocks.0.attn.qkv.weight``), so
``last`` / ``best.safetensors`` load with ``vitzoo.load`` and no peft. Loading such merged
weights back into the adapted model puts them in the base layer with ``B = 0`` (the same
function), which is how the run's final evaluation reads ``best.safetensors``. Resuming needs the
unmerged tensors: :func:`adapter_tensors` / :func:`restore_adapter_tensors` carry them through
the run's state file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.errors import SpecError, SpecIssue
from vitzoo.spec.sections import LoraSection
from vitzoo.training.freeze import is_classifier

ADAPTER = "default"
#: Prefix of the unmerged LoRA tensors in a run's state file.
STATE_PREFIX = "lora."
ADAPTER_FILE = "adapter.safetensors"


def _issue(field: str, message: str) -> SpecError:
    return SpecError([SpecIssue(f"train.lora.{field}" if field else "train.lora", message)])


def target_names(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Full names of the linear layers whose last name is in ``targets`` (never the classifier).
    A target matching no layer is a spec error listing the linear layers the model has (also
    beside targets that match: a misspelt one would otherwise silently adapt less)."""
    linear = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not is_classifier(n)
    ]
    last_names = {n.rsplit(".", 1)[-1] for n in linear}
    unmatched = [t for t in targets if t not in last_names]
    if unmatched:
        raise _issue(
            "targets",
            f"{unmatched} match no linear layer of this {type(model).__name__}; its linear "
            f"layers are named: {', '.join(sorted(last_names)) or '(none)'}",
        )
    return [n for n in linear if n.rsplit(".", 1)[-1] in targets]


def apply_lora(model: nn.Module, cfg: LoraSection) -> list[str]:
    """Add adapters to ``model`` in place (its other parameters frozen, the classifier kept
    trainable) and install the merge-on-save hooks; returns the adapted layers' names."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise _issue("", "needs peft: pip install 'vitzoo[lora]'") from None
    names = target_names(model, tuple(cfg.targets))
    config = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=names
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name or is_classifier(name))
    model._register_state_dict_hook(_merged_state_dict)
    model._register_load_state_dict_pre_hook(_load_merged, with_module=True)
    model.__dict__["vitzoo_lora_config"] = {**cfg.model_dump(mode="json"), "layers": names}
    return names


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The adapted layers by name (peft's LoRA layers: a ``base_layer`` plus ``lora_A``)."""
    return {
        n: m
        for n, m in model.named_modules()
        if hasattr(m, "base_layer") and isinstance(getattr(m, "lora_A", None), nn.ModuleDict)
    }


def _merged_state_dict(
    module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any
) -> dict[str, Any]:
    """State-dict hook: each adapted layer as one plain linear layer, ``W + delta``."""
    for name, layer in lora_layers(module).items():
        key = f"{prefix}{name}."
        base = state.pop(f"{key}base_layer.weight")
        with torch.no_grad():
            delta = layer.get_delta_weight(ADAPTER)
        state[f"{key}weight"] = (base + delta.to(base.dtype)).detach()
        if f"{key}base_layer.bias" in state:
            state[f"{key}bias"] = state.pop(f"{key}base_layer.bias")
        for extra in [k for k in state if k.startswith(f"{key}lora_")]:
            del state[extra]
    return state


def _load_merged(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load-state-dict pre-hook: merged weights go to the base layer with ``B = 0`` (the same
    function); an unmerged state dict passes through unchanged."""
    for name, layer in lora_layers(module).items():
        key = f"{prefix}{name}."
        if f"{key}weight" not in state or f"{key}base_layer.weight" in state:
            continue
        state[f"{key}base_layer.weight"] = state.pop(f"{key}weight")
        if f"{key}bias" in state:
            state[f"{key}base_layer.bias"] = state.pop(f"{key}bias")
        a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        state[f"{key}lora_A.{ADAPTER}.weight"] = a.detach().clone()
        state[f"{key}lora_B.{ADAPTER}.weight"] = torch.zeros_like(b)


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unmerged tensors of every adapted layer (base and adapters), for a run's state file;
    empty for a model without adapters."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model).items():
        for key, tensor in layer.named_parameters():
            out[f"{STATE_PREFIX}{name}.{key}"] = tensor.detach().cpu().contiguous()
    return out


def restore_adapter_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Put back what :func:`adapter_tensors` saved (a resumed LoRA run continues exactly)."""
    own = {
        f"{STATE_PREFIX}{name}.{key}": p
        for name, layer in lora_layers(model).items()
        for key, p in layer.named_parameters()
    }
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise SpecError(
            [SpecIssue("train.lora", f"the run's state file lacks adapter tensors {missing[:3]}")]
        )
    with torch.no_grad():
        for key, param in own.items():
            param.copy_(tensors[key])


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """The adapters alone (``lora_A`` / ``lora_B`` per layer) with their configuration."""
    from vitzoo.checkpoint import atomic_save_tensors

    tensors = {
        f"{name}.{key}": p.detach().cpu().contiguous()
        for name, layer in lora_layers(model).items()
        for key, p in layer.named_parameters()
        if ".lora_" in f".{key}"
    }
    config = model.__dict__.get("vitzoo_lora_config", {})
    atomic_save_tensors(tensors, path, {"vitzoo.lora": json.dumps(config)})
    return Path(path)
