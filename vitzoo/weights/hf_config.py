"""Small readers of Hugging Face ``config.json`` fields that several families' converters share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vitzoo.errors import WeightsError

#: transformers ``hidden_act`` names -> vitzoo MLP activations computing the same function
#: (``tests/test_weights_hf.py`` checks each against transformers' own in float64). Only exact
#: equivalents: ``gelu_fast`` rounds sqrt(2/pi) to 10 digits and is left out.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    # the tanh approximation, spelled four ways (CLIP text towers, SigLIP, GPT-2 ...)
    "gelu_pytorch_tanh": "gelu-tanh",
    "gelu_new": "gelu-tanh",
    "gelu_accurate": "gelu-tanh",
    "gelu_python_tanh": "gelu-tanh",
    # x * sigmoid(1.702 x): OpenAI's CLIP
    "quick_gelu": "quick-gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "hardswish": "hardswish",
}


def hf_activation(name: str) -> str:
    """The vitzoo activation for an HF ``hidden_act``; an error rather than a near miss."""
    try:
        return HF_ACTIVATIONS[name]
    except KeyError:
        raise WeightsError(
            f"config.json: hidden_act={name!r} has no exact vitzoo equivalent "
            f"(supported: {', '.join(sorted(HF_ACTIVATIONS))})"
        ) from None


def hf_num_classes(config: Mapping[str, Any]) -> int:
    """Classifier width: 0 for a bare ``*Model`` (features only), else the label count."""
    arch = (config.get("architectures") or [""])[0]
    if arch and "ForImageClassification" not in arch:
        return 0
    labels = config.get("id2label")
    if labels:
        return len(labels)
    return int(config.get("num_labels", 2))


def hf_class_names(config: Mapping[str, Any]) -> list[str] | None:
    """``id2label`` in index order (HF stores the keys as strings)."""
    labels = config.get("id2label")
    if not labels:
        return None
    return [str(labels[k]) for k in sorted(labels, key=lambda k: int(k))]
