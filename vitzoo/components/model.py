"""The model protocol every vitzoo model follows, whatever its architecture.

Objectives, the CLI, checkpoints and the conformance suite talk to models only through this
protocol (never through private attribute paths), so a new architecture works with all of them
as soon as it implements it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class VitzooModel(nn.Module):
    """Base class of built models: timm-style classifier API plus introspection.

    Subclasses implement ``forward_features``, ``forward_head``, ``reset_classifier`` and
    ``forward_intermediates``, and set ``num_features``, ``num_classes``, ``num_prefix_tokens``.
    """

    num_features: int
    num_classes: int
    num_prefix_tokens: int = 0
    #: Expected input without the batch axis: (C, H, W) for images, (C, T, H, W) for video.
    input_size: tuple[int, ...] = ()
    #: What objectives may rely on: "tokens" (a flat token sequence with embed/encode),
    #: "feature-maps" (hierarchical stages returning (B, C, H, W)).
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> Any:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> Any:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features and the output of each selected layer/stage (all when ``None``)."""
        raise NotImplementedError

    def example_input(
        self, batch_size: int = 2, *, device: Any = None, dtype: Any = None
    ) -> torch.Tensor:
        """A random input of the size this model was built for (used by checks and summaries)."""
        return torch.randn(batch_size, *self.input_size, device=device, dtype=dtype)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that an optimiser should not decay (positions, tokens)."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward to save memory."""
        self.grad_checkpointing = enable

    def parameter_layers(self) -> tuple[dict[str, int], int]:
        """The depth of every parameter, for layer-wise learning-rate decay, and the deepest.

        Depth 0 is the input side (patch embedding, positions, class tokens), ``1..N`` are the
        model's blocks in order, ``N + 1`` what follows the last block (final norm, head). An
        architecture may override this; the default reads the module tree (see
        :func:`parameter_layers`), so every model has it.
        """
        return parameter_layers(self)


def _block_units(module: nn.Module, prefix: str = "", *, in_stage: bool = False) -> list[str]:
    """Names of the modules that count as one layer each, in registration order.

    An element of an ``nn.ModuleList`` with at least two parametrised parts (a block: norms,
    attention, MLP) is a layer, unless most of its parameters sit in ModuleLists nested inside
    it: then it is a stage and its own nested elements are the layers (a hierarchical stage's
    blocks; its downsampling joins the next block). One-part elements (per-branch patch
    embeddings, norms, heads of a multi-scale model) are not layers, lists inside a layer (an
    attention's per-head projections) are not looked into, and top-level ``head*`` modules
    (the classifier, by the protocol's naming) are never layers. Inside a stage an
    ``nn.Sequential`` is a list too (staged models often chain their blocks that way); at the
    top level it is not (a convolutional stem is the input side, not depth).
    """
    units: list[str] = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if not prefix and name.startswith("head"):
            continue
        if _is_stack(child, in_stage):
            for index, element in child.named_children():
                units.extend(_layer_or_stage(element, f"{path}.{index}"))
        else:
            units.extend(_block_units(child, f"{path}.", in_stage=in_stage))
    return units


def _is_stack(module: nn.Module, in_stage: bool) -> bool:
    return isinstance(module, nn.ModuleList) or (in_stage and isinstance(module, nn.Sequential))


def _layer_or_stage(element: nn.Module, path: str) -> list[str]:
    total = sum(p.numel() for p in element.parameters())
    if total == 0:
        return []
    if _is_stack(element, True):  # a list of lists: its elements decide
        return [
            unit
            for index, child in element.named_children()
            for unit in _layer_or_stage(child, f"{path}.{index}")
        ]
    nested = _block_units(element, f"{path}.", in_stage=True)
    if not nested:
        return [path] if _parametrised_parts(element) >= 2 else []
    owned = {
        id(p) for unit in nested for p in element.get_submodule(unit[len(path) + 1 :]).parameters()
    }
    in_nested = sum(p.numel() for p in element.parameters() if id(p) in owned)
    return nested if in_nested * 2 > total else [path]


def _parametrised_parts(module: nn.Module) -> int:
    own = 1 if any(True for _ in module.parameters(recurse=False)) else 0
    return own + sum(1 for child in module.children() if any(True for _ in child.parameters()))


def parameter_layers(model: nn.Module) -> tuple[dict[str, int], int]:
    """Depth of each parameter name (see :meth:`VitzooModel.parameter_layers`) and the maximum.

    Parameters outside every layer take the depth of the next layer in registration order
    (a stage's downsampling), 0 before the first layer, ``N + 1`` after the last one.
    """
    units = _block_units(model)
    depth_of_unit = {unit: i + 1 for i, unit in enumerate(units)}
    names = [name for name, _ in model.named_parameters()]
    direct: dict[str, int] = {}
    for name in names:
        for unit, depth in depth_of_unit.items():
            if name.startswith(f"{unit}."):
                direct[name] = depth
                break
    last = len(units) + 1
    layers: dict[str, int] = {}
    pending: list[str] = []
    seen_block = False
    for name in names:
        if name in direct:
            for waiting in pending:
                layers[waiting] = direct[name] if seen_block else 0
            pending = []
            seen_block = True
            layers[name] = direct[name]
        else:
            pending.append(name)
    for waiting in pending:
        layers[waiting] = last if seen_block else 0
    for name in names:  # the classifier trains at the full rate wherever it was registered
        if name.split(".", 1)[0].startswith("head"):
            layers[name] = last
    return layers, last


def run_block(block: nn.Module, x: torch.Tensor, checkpoint: bool, **kwargs: Any) -> torch.Tensor:
    """Call ``block`` directly, or under activation checkpointing when training with it on."""
    if checkpoint and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint as ckpt

        return ckpt(block, x, use_reentrant=False, **kwargs)
    return block(x, **kwargs)
