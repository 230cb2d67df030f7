"""The model protocol every vitzoo model follows, whatever its architecture.

Objectives, the CLI, checkpoints and the conformance suite talk to models only through this
protocol (never through private attribute paths), so a new architecture works with all of them
as soon as it implements it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from vitzoo.components.features import (
    FeatureInfo,
    IndexSpec,
    nominal_reduction,
    resolve_feature_indices,
)

OutputFormat = Literal["NCHW", "NLC"]

#: ``rebuild(model, img_size, system, spec_overrides)``: rebuilds a model from its spec for a new
#: input size. Rebuilding means resolving and building a spec, which the builder -- a layer
#: above this one -- does; it installs itself here when imported (every model with a spec was
#: built by it), so this module never imports upwards.
Rebuilder = Callable[[nn.Module, Any, Any, "dict[str, Any] | None"], None]
_rebuilder: Rebuilder | None = None


def install_rebuilder(rebuild: Rebuilder) -> None:
    """Let ``set_input_size`` rebuild models through ``rebuild`` (called by the builder)."""
    global _rebuilder
    _rebuilder = rebuild


class VitzooModel(nn.Module):
    """Base class of built models: timm-style classifier and backbone API plus introspection.

    Subclasses implement ``forward_features`` and ``forward_head``, set ``num_features``,
    ``num_classes``, ``num_prefix_tokens``, and describe their feature layers through the
    *structure hooks* below (``feature_layer_names``, ``intermediate_stem``,
    ``intermediate_layer``, ``intermediate_map``, ``intermediate_final``,
    ``truncate_feature_layers``). Everything a backbone user calls -- ``forward_intermediates``,
    ``feature_info``, ``prune_intermediate_layers``, ``get_classifier``, ``reset_classifier``,
    ``set_input_size`` -- is written once here on top of those hooks, so index rules, output
    formats and device handling cannot drift between architectures.
    """

    num_features: int
    num_classes: int
    num_prefix_tokens: int = 0
    #: Expected input without the batch axis: (C, H, W) for images, (C, T, H, W) for video.
    input_size: tuple[int, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> Any:
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> Any:
        raise NotImplementedError

    # -- classifier -----------------------------------------------------------------------------
    #: The attribute holding the classifier (CrossViT has one head per branch: ``heads``).
    classifier_attr: str = "head"

    def get_classifier(self) -> nn.Module:
        """The classifier module (parameter-free after ``reset_classifier(0)``)."""
        return getattr(self, self.classifier_attr)

    def build_classifier(self, num_classes: int) -> nn.Module:
        """A fresh classifier for ``num_classes`` (0: identity). Default: the spec's head, rebuilt
        in the context the model built it in (``self._head_ctx``)."""
        from vitzoo.components.layers import init_vit_weights

        head = self._head_ctx.build("head", self.config.head, num_classes=num_classes)
        head.apply(init_vit_weights)
        return head

    def set_global_pool(self, global_pool: str) -> None:
        """Change how ``forward_head`` pools; models with one fixed pooling accept only it."""
        allowed = self.global_pool_choices()
        if global_pool not in allowed:
            raise ValueError(
                f"{type(self).__name__} cannot pool with {global_pool!r}; allowed: {allowed}"
            )

    def global_pool_choices(self) -> list[str]:
        return ["avg"]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` classes (0: features), on the old one's device,
        dtype and train/eval mode; ``global_pool`` (when given) changes the pooling first."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if global_pool is not None:
            self.set_global_pool(global_pool)
        reference = reference_tensor(self.get_classifier(), self)
        head = self.build_classifier(num_classes)
        if reference is not None:
            head = head.to(device=reference.device, dtype=reference.dtype)
        # a fresh module is in training mode; keep the model's (DeiT's head depends on it)
        setattr(self, self.classifier_attr, head.train(self.training))
        self.num_classes = num_classes

    # -- structure hooks (what an architecture supplies) ------------------------------------------
    def feature_layer_names(self) -> list[str]:
        """Module names of the layers ``forward_intermediates`` indexes, in order."""
        raise NotImplementedError(f"{type(self).__name__} declares no feature layers")

    def intermediate_stem(self, x: torch.Tensor) -> Any:
        """Input -> the state the first feature layer consumes."""
        raise NotImplementedError

    def intermediate_layer(self, index: int, state: Any) -> Any:
        """Run feature layer ``index`` on ``state``."""
        raise NotImplementedError

    def intermediate_map(self, index: int, state: Any, norm: bool) -> torch.Tensor:
        """The (B, C, *grid) feature map of ``state`` after layer ``index`` (prefix tokens
        removed); ``norm`` applies the final norm where it fits that layer."""
        raise NotImplementedError

    def intermediate_final(self, state: Any) -> torch.Tensor:
        """The state after the last feature layer -> what ``forward_features`` returns."""
        raise NotImplementedError

    def truncate_feature_layers(self, keep: int) -> None:
        """Drop every feature layer from ``keep`` on (and whatever only they feed)."""
        raise NotImplementedError(f"{type(self).__name__} cannot drop layers")

    def drop_final_norm(self) -> None:
        """Replace the final norm by an identity (``prune_intermediate_layers(prune_norm=True)``)."""
        if isinstance(getattr(self, "norm", None), nn.Module):
            self.norm = nn.Identity()

    # -- the backbone API, written once -----------------------------------------------------------
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: IndexSpec = None,
        norm: bool = False,
        output_fmt: OutputFormat = "NCHW",
        intermediates_only: bool = False,
    ) -> Any:
        """Feature maps of the selected layers, and (unless ``intermediates_only``) the final
        features ``forward_features`` would give.

        ``indices``: ``None`` all layers, an int the last n, a list those (negative from the
        end); out-of-range or repeated indices raise. ``output_fmt``: ``"NCHW"`` maps
        (B, C, H, W) -- (B, C, T, H, W) for video -- or ``"NLC"`` tokens (B, H*W, C); prefix
        tokens (class, distillation, registers) are never part of a map. ``norm`` applies the
        final norm to the maps where it fits. ``intermediates_only`` stops after the last
        selected layer and returns the list alone.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        count = len(self.feature_layer_names())
        take = resolve_feature_indices(indices, count)
        wanted = set(take)
        last = max(take) if intermediates_only else count - 1
        state = self.intermediate_stem(x)
        found: dict[int, torch.Tensor] = {}
        for i in range(last + 1):
            state = self.intermediate_layer(i, state)
            if i in wanted:
                fmap = self.intermediate_map(i, state, norm)
                found[i] = fmap.flatten(2).transpose(1, 2) if output_fmt == "NLC" else fmap
        maps = [found[i] for i in take]
        if intermediates_only:
            return maps
        return self.intermediate_final(state), maps

    @property
    def feature_info(self) -> FeatureInfo:
        """``num_chs`` / ``reduction`` / ``module`` of every feature layer (timm's convention).

        Measured once per input size by a batch-of-one pass in eval mode (shape facts cannot
        drift from the code that produces them); on the meta device this costs nothing.
        """
        key = tuple(self.input_size)
        cached = self.__dict__.get("_feature_info_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        info = self._measure_feature_info()
        self.__dict__["_feature_info_cache"] = (key, info)
        return info

    def _measure_feature_info(self) -> FeatureInfo:
        names = self.feature_layer_names()
        reference = reference_tensor(self)
        device = reference.device if reference is not None else None
        dtype = reference.dtype if reference is not None and reference.is_floating_point() else None
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                maps = self.forward_intermediates(
                    self.example_input(1, device=device, dtype=dtype), intermediates_only=True
                )
        finally:
            self.train(was_training)
        height = self.input_size[-2]
        return FeatureInfo(
            dict(
                num_chs=int(m.shape[1]),
                reduction=nominal_reduction(height, int(m.shape[-2])),
                module=name,
                index=i,
            )
            for i, (name, m) in enumerate(zip(names, maps, strict=True))
        )

    def prune_intermediate_layers(
        self, indices: IndexSpec = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep only what the selected feature layers need; returns the absolute indices.

        Layers after the last selected one are removed, ``prune_head`` replaces the classifier
        (and pre-logits, post-pool norm) by identities, ``prune_norm`` the final norm. The pruned model is a
        feature extractor: call ``forward_intermediates(..., intermediates_only=True)``.
        """
        take = resolve_feature_indices(indices, len(self.feature_layer_names()))
        info = self.feature_info  # measured before the layers are gone
        keep = max(take) + 1
        if keep < len(info):
            self.truncate_feature_layers(keep)
        if prune_norm:
            self.drop_final_norm()
        if prune_head:
            self.reset_classifier(0)
            for part in ("pre_logits", "fc_norm"):  # what feeds only the classifier
                if isinstance(getattr(self, part, None), nn.Module):
                    setattr(self, part, nn.Identity())
        self.__dict__["_feature_info_cache"] = (tuple(self.input_size), info)
        self.__dict__["_pruned"] = (list(take), prune_norm, prune_head)
        return take

    # -- input size ---------------------------------------------------------------------------
    #: Dotted path of the spec field that holds the input image size.
    image_size_field: str = "image_size"

    def set_input_size(
        self, img_size: int | Sequence[int], *, system: Any = None, **spec_overrides: Any
    ) -> None:
        """Rebuild this model for another image size, in place, keeping its weights.

        The spec is re-validated with the new size, so a size the architecture cannot take
        (windows that do not tile it) is a ``SpecError`` saying which sizes work; then the model
        is rebuilt and loads its own weights, position tables and relative-position tables
        resampled to the new grids (:mod:`vitzoo.components.resample`; the rebuild itself is
        :func:`vitzoo.builder.rebuild_for_input_size`, installed here by the builder). Device, dtype, mode,
        ``reset_classifier`` changes and pruning are kept. ``spec_overrides`` change other
        config fields at the same time -- the window sizes a new size needs, e.g.
        ``set_input_size(64, window_size=4)``; relative-position tables follow. ``system``: the
        plugin system that built the model (default: the global one). Forward hooks on
        submodules do not survive.
        """
        if _rebuilder is None or getattr(self, "vitzoo_spec", None) is None:
            raise ValueError(
                f"{type(self).__name__} was not built from a spec by vitzoo.build, so it cannot "
                "be rebuilt for another input size"
            )
        _rebuilder(self, img_size, system, spec_overrides)

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

    def shard_units(self) -> list[str]:
        """The submodules a sharded run (``train.strategy: fsdp``) shards one by one.

        FSDP gathers a unit's parameters when the unit is called and frees them when it
        returns, so a unit must run through its own ``__call__`` (as :func:`run_block` does)
        and its parameters must not be used outside that call. The default is the model's
        layers, as :meth:`parameter_layers` counts them; an architecture that calls the parts
        of a layer one by one overrides this to leave that layer out (its parameters are then
        gathered with the model's other, non-layer parameters).
        """
        return _block_units(self)


def shard_units(module: nn.Module) -> list[str]:
    """Names of the submodules of ``module`` to shard one by one, for any model or for an
    objective that holds models (the student, an EMA teacher, a decoder's blocks).

    Each vitzoo model inside ``module`` answers for itself (:meth:`VitzooModel.shard_units`);
    the rest is read like a model's module tree (stacks of multi-part blocks). The units never
    nest, and ``module`` itself is not one: what no unit holds is gathered with the root.
    """
    if isinstance(module, VitzooModel):
        return module.shard_units()
    models: list[tuple[str, VitzooModel]] = []
    for path, sub in module.named_modules():
        if isinstance(sub, VitzooModel) and not any(path.startswith(f"{p}.") for p, _ in models):
            models.append((path, sub))
    units = [u for u in _block_units(module) if not any(u.startswith(f"{p}.") for p, _ in models)]
    for path, model in models:
        units.extend(f"{path}.{unit}" for unit in model.shard_units())
    return units


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


def reference_tensor(*modules: nn.Module) -> torch.Tensor | None:
    """The first floating-point parameter or buffer of ``modules`` (for device and dtype)."""
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point():
                return tensor
    return None


def run_block(block: nn.Module, x: torch.Tensor, checkpoint: bool, **kwargs: Any) -> torch.Tensor:
    """Call ``block`` directly, or under activation checkpointing when training with it on."""
    if checkpoint and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint as ckpt

        return ckpt(block, x, use_reentrant=False, **kwargs)
    return block(x, **kwargs)
