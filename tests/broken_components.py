"""A zoo of deliberately broken components, each with one bug a conformance check must catch.

Registered by hand as the plugin ``broken`` (``load_plugins(extra=[("broken", module)])``), never
through an entry point. Every variant differs from a working one in exactly the way its name
says, so a check that fails on it and passes on the good original is proven to see that bug.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, field_serializer
from torch import nn

from vitzoo import ComponentConfig, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.layers import to_pair
from vitzoo.components.patchify import LinearPatchEmbed
from vitzoo.components.vit import VisionTransformer, VitConfig


# -- attention with one bug each ---------------------------------------------------------------
class MixesBatch(MultiHeadAttention):
    """Adds the batch mean: sample 0's output depends on sample 1."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x, mask)
        return out + out.mean(dim=0, keepdim=True)


class DetachedGate(MultiHeadAttention):
    """A learned gate used through ``.detach()``: it never receives a gradient."""

    def __init__(self, dim: int, num_heads: int, config: MhsaConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.gate = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, mask) * self.gate.detach()


class ReturnsNan(MultiHeadAttention):
    """0/0 in the output."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x, mask)
        return out + torch.zeros_like(out) / 0.0


class NoisyEval(MultiHeadAttention):
    """Dropout that ignores ``self.training``: eval is not deterministic."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.dropout(super().forward(x, mask), p=0.5, training=True)


class IgnoresMask(MultiHeadAttention):
    """Claims mask support (tag "mask") but drops the mask."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, None)


class RandomBuffer(MultiHeadAttention):
    """A non-persistent buffer drawn at init that the output depends on (not in the state_dict)."""

    def __init__(self, dim: int, num_heads: int, config: MhsaConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.register_buffer("offset", torch.randn(dim), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, mask) + self.offset


class ReinitOnCopy(MultiHeadAttention):
    """``__deepcopy__`` re-draws the output projection, so the copy computes something else."""

    def __deepcopy__(self, memo: dict[int, Any]) -> ReinitOnCopy:
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            object.__setattr__(clone, key, copy.deepcopy(value, memo))
        with torch.no_grad():
            clone.proj.weight.normal_()
        return clone


class Float32Offset(MultiHeadAttention):
    """Creates a float32 tensor in forward: a bfloat16 model ends up mixing dtypes."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x, mask)
        return out + torch.zeros(out.shape[-1], dtype=torch.float32)


class OwnSoftmax(MultiHeadAttention):
    """Computes softmax itself instead of through ``attend``: record_attention sees nothing."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        weights = (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(dim=-1)
        return self.merge_heads(weights @ v)


def _attention_config(name: str) -> type[MhsaConfig]:
    """An mhsa config registered under another name."""
    return type(
        f"Broken{name.title().replace('-', '')}Config",
        (MhsaConfig,),
        {"__annotations__": {"type": Literal[name]}, "type": name, "__module__": __name__},
    )


class DriftingSpecConfig(MhsaConfig):
    """Serialises ``head_dim`` doubled: spec -> YAML -> spec is not the same spec."""

    type: Literal["drifting-spec"] = "drifting-spec"
    head_dim: int | None = 8

    @field_serializer("head_dim")
    def _dump(self, value: int | None) -> int | None:
        return None if value is None else value * 2


class LooseConfig(MhsaConfig):
    """Accepts (and silently ignores) unknown keys."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["loose-config"] = "loose-config"


ATTENTION: dict[str, tuple[type[MultiHeadAttention], set[str]]] = {
    "mixes-batch": (MixesBatch, set()),
    "detached-gate": (DetachedGate, set()),
    "returns-nan": (ReturnsNan, set()),
    "noisy-eval": (NoisyEval, set()),
    "ignores-mask": (IgnoresMask, {"mask"}),
    "random-buffer": (RandomBuffer, set()),
    "reinit-on-copy": (ReinitOnCopy, set()),
    "float32-offset": (Float32Offset, set()),
    "own-softmax": (OwnSoftmax, set()),
}


def _attention_factory(cls: type[MultiHeadAttention]) -> Any:
    def factory(config: MhsaConfig, ctx: BuildContext) -> MultiHeadAttention:
        return cls(ctx.dim, ctx.num_heads, config)

    factory.__doc__ = cls.__doc__
    return factory


# -- a patchifier without the spec-time divisibility rule --------------------------------------
class UncheckedPatchConfig(ComponentConfig):
    """Linear patches whose config forgets to check that the patch size divides the image."""

    type: Literal["unchecked-patch"] = "unchecked-patch"
    patch_size: int = 8


def build_unchecked_patch(config: UncheckedPatchConfig, ctx: BuildContext) -> nn.Module:
    """Linear patch embedding without a spec-time check."""
    return LinearPatchEmbed(ctx.in_chans, ctx.dim, to_pair(config.patch_size))


# -- a pooling that keeps a token axis -----------------------------------------------------------
class KeepsTokenAxisConfig(ComponentConfig):
    """Class-token pooling that returns (B, 1, D) instead of (B, D)."""

    type: Literal["keeps-token-axis"] = "keeps-token-axis"


class KeepsTokenAxis(nn.Module):
    def forward(self, tokens: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        return tokens[:, :1]


def build_keeps_token_axis(config: KeepsTokenAxisConfig, ctx: BuildContext) -> nn.Module:
    """Pooling with a stray token axis."""
    return KeepsTokenAxis()


# -- architectures that break the model protocol -------------------------------------------------
class ScaledForwardConfig(VitConfig):
    """A ViT whose forward is not forward_head(forward_features(x))."""

    type: Literal["scaled-forward"] = "scaled-forward"


class ScaledForward(VisionTransformer):
    def forward(self, x: torch.Tensor) -> Any:
        return self.forward_head(self.forward_features(x)) * 2


class NoIntermediatesConfig(VitConfig):
    """A ViT whose forward_intermediates returns no per-layer outputs."""

    type: Literal["no-intermediates"] = "no-intermediates"


class NoIntermediates(VisionTransformer):
    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.forward_features(x), []


class WrappingIndicesConfig(VitConfig):
    """A ViT whose forward_intermediates wraps out-of-range indices (``[4]`` of 4 -> block 0)."""

    type: Literal["wrapping-indices"] = "wrapping-indices"


class WrappingIndices(VisionTransformer):
    def forward_intermediates(self, x: torch.Tensor, indices: Any = None, **kwargs: Any) -> Any:
        n = len(self.blocks)
        if isinstance(indices, int):
            indices = list(range(n))[-indices:] if indices else list(range(n))
        elif indices is not None:
            indices = [i % n for i in indices] or [n - 1]
        return super().forward_intermediates(x, indices, **kwargs)


class FrozenGridMapsConfig(VitConfig):
    """A ViT whose feature maps stay at the built resolution whatever the input size."""

    type: Literal["frozen-grid-maps"] = "frozen-grid-maps"


class FrozenGridMaps(VisionTransformer):
    def intermediate_map(self, index: int, state: Any, norm: bool) -> torch.Tensor:
        fmap = super().intermediate_map(index, state, norm)
        return F.interpolate(fmap, size=(4, 4), mode="bilinear", align_corners=False)


class KeepsHeadConfig(VitConfig):
    """A ViT whose prune_intermediate_layers keeps the classifier."""

    type: Literal["keeps-head"] = "keeps-head"


class KeepsHead(VisionTransformer):
    def prune_intermediate_layers(
        self, indices: Any = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        return super().prune_intermediate_layers(indices, prune_norm, prune_head=False)


def build_wrapping_indices(config: WrappingIndicesConfig, ctx: BuildContext) -> nn.Module:
    """ViT that wraps feature indices."""
    return WrappingIndices(config, ctx)


def build_frozen_grid_maps(config: FrozenGridMapsConfig, ctx: BuildContext) -> nn.Module:
    """ViT with fixed-resolution feature maps."""
    return FrozenGridMaps(config, ctx)


def build_keeps_head(config: KeepsHeadConfig, ctx: BuildContext) -> nn.Module:
    """ViT that keeps its head when pruned."""
    return KeepsHead(config, ctx)


def build_scaled_forward(config: ScaledForwardConfig, ctx: BuildContext) -> nn.Module:
    """ViT with an inconsistent forward."""
    return ScaledForward(config, ctx)


def build_no_intermediates(config: NoIntermediatesConfig, ctx: BuildContext) -> nn.Module:
    """ViT without intermediates."""
    return NoIntermediates(config, ctx)


TINY = {
    "image_size": 32,
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "linear", "patch_size": 8},
}


@hookimpl
def register_attention(register: Any) -> None:
    for name, (cls, tags) in ATTENTION.items():
        register(name, _attention_factory(cls), _attention_config(name), tags=tags)
    register("drifting-spec", _attention_factory(MultiHeadAttention), DriftingSpecConfig)
    register("loose-config", _attention_factory(MultiHeadAttention), LooseConfig)


@hookimpl
def register_patchifiers(register: Any) -> None:
    register("unchecked-patch", build_unchecked_patch, UncheckedPatchConfig)


@hookimpl
def register_pooling(register: Any) -> None:
    register("keeps-token-axis", build_keeps_token_axis, KeepsTokenAxisConfig)


@hookimpl
def register_architectures(register: Any) -> None:
    register("scaled-forward", build_scaled_forward, ScaledForwardConfig, example=TINY)
    register("no-intermediates", build_no_intermediates, NoIntermediatesConfig, example=TINY)
    register("wrapping-indices", build_wrapping_indices, WrappingIndicesConfig, example=TINY)
    register("frozen-grid-maps", build_frozen_grid_maps, FrozenGridMapsConfig, example=TINY)
    register("keeps-head", build_keeps_head, KeepsHeadConfig, example=TINY)
