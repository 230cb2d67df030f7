"""Built-in plugin: learnable-memory ViT (Sandler et al. 2022, "Fine-tuning Image Transformers
using Learnable Memory", arXiv:2203.15243).

A frozen ViT-base model gains, per task, ``memories_per_layer`` learned memory tokens at every layer
and its own class token and head. Memory tokens are appended to each block's input and dropped
from its output; an attention mask stops the base model's tokens from attending to the memories or
the task token, so the base model computes exactly what it computed before, and any number of tasks
can share one base (the "non-destructive" fine-tuning of the paper). Only the task token and the
memories reach the base blocks through the standard ``mask`` argument, so every block and attention
that accepts full boolean masks works.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.heads import linear_or_identity
from vitzoo.components.model import VitzooModel
from vitzoo.components.vit import VisionTransformer, VitConfig, tokens_to_grid_map
from vitzoo.config import NonNegativeInt, PositiveInt
from vitzoo.registration_examples import TINY_VIT


class MemoryVitConfig(ComponentConfig):
    """A frozen ViT-base model (``base``) plus per-layer learnable memory and a task head."""

    type: Literal["memory-vit"] = "memory-vit"
    base: ComponentSpec("architecture") = component_default(type="vit")
    memories_per_layer: PositiveInt = 10
    num_classes: NonNegativeInt = 2
    freeze_base: bool = True

    @model_validator(mode="after")
    def _rules(self) -> MemoryVitConfig:
        # Architectures built on the ViT base whose blocks cannot take (N, N) masks say so with
        # ``full_attention_masks = False`` on their config class (XCiT).
        if not isinstance(self.base, VitConfig) or not getattr(
            self.base, "full_attention_masks", True
        ):
            raise SpecValueError(
                "base.type",
                "learnable memory needs a model built on the ViT base (flat tokens, blocks "
                "taking full attention masks); allowed: vit, simple-vit, deit and their kin",
            )
        if self.memories_per_layer < 0:
            raise SpecValueError("memories_per_layer", "must be >= 0")
        if self.num_classes < 0:
            raise SpecValueError("num_classes", "must be >= 0")
        return self


class MemoryVit(VitzooModel):
    """Task adapter around a ViT: its own class token, per-layer memories and head.

    Build it from a spec (``memory-vit``) or wrap an existing, trained model with
    :meth:`from_base`; several adapters may wrap the same base object.
    """

    def __init__(
        self,
        base: VisionTransformer,
        memories_per_layer: int,
        num_classes: int,
        freeze_base: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(base, VisionTransformer):
            raise TypeError("learnable memory wraps a model built on the ViT base")
        self.base = base
        self.freeze_base = freeze_base
        if freeze_base:
            base.requires_grad_(False)
        dim = base.num_features
        depth = len(base.blocks)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.memories = nn.Parameter(torch.zeros(depth, memories_per_layer, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.memories, std=0.02)
        self.head = linear_or_identity(dim, num_classes)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.bias)
            nn.init.trunc_normal_(self.head.weight, std=0.02)
        self.num_features = dim
        self.num_classes = num_classes
        self.num_prefix_tokens = base.num_prefix_tokens
        self.input_size = base.input_size

    @classmethod
    def from_base(
        cls, base: VisionTransformer, memories_per_layer: int = 10, num_classes: int = 2
    ) -> MemoryVit:
        """A new task on an existing (trained) model; the base is frozen, not copied."""
        return cls(base, memories_per_layer, num_classes, freeze_base=True)

    def train(self, mode: bool = True) -> MemoryVit:
        """A frozen base stays in eval mode (no dropout), so it keeps computing what it did."""
        super().train(mode)
        if self.freeze_base:
            self.base.eval()
        return self

    @staticmethod
    def attention_mask(num_base: int, num_memories: int, device: Any) -> torch.Tensor:
        """(1, N, N) boolean mask: base tokens see only base tokens; task token and memories see
        everything. Layout: [base tokens, task token, memories]."""
        total = num_base + 1 + num_memories
        mask = torch.ones(1, total, total, dtype=torch.bool, device=device)
        mask[:, :num_base, num_base:] = False
        return mask

    # -- structure: the base's blocks, each with its memories; the state is the base tokens
    # followed by the task token; maps are the base's patch tokens
    image_size_field = "base.image_size"

    def feature_layer_names(self) -> list[str]:
        return [f"base.blocks.{i}" for i in range(len(self.base.blocks))]

    def intermediate_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        tokens, grid = self.base.embed(x)
        tokens = self.base.drop_patches(tokens)
        task = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([tokens, task], dim=1), grid

    def intermediate_layer(
        self, index: int, state: tuple[torch.Tensor, tuple[int, ...]]
    ) -> tuple[torch.Tensor, tuple[int, ...]]:
        tokens, grid = state
        batch, n, _ = tokens.shape
        mask = self.attention_mask(n - 1, self.memories.shape[1], tokens.device)
        memory = self.memories[index].expand(batch, -1, -1)
        return self.base.blocks[index](torch.cat([tokens, memory], dim=1), mask=mask)[:, :n], grid

    def intermediate_map(
        self, index: int, state: tuple[torch.Tensor, tuple[int, ...]], norm: bool
    ) -> torch.Tensor:
        tokens, grid = state
        patches = tokens[:, self.base.num_prefix_tokens : -1]
        return tokens_to_grid_map(self.base.norm(patches) if norm else patches, grid)

    def intermediate_final(self, state: tuple[torch.Tensor, tuple[int, ...]]) -> torch.Tensor:
        return self.base.norm(state[0])

    def truncate_feature_layers(self, keep: int) -> None:
        self.base.blocks = self.base.blocks[:keep]

    def drop_final_norm(self) -> None:
        self.base.norm = nn.Identity()

    # -- the model protocol ------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[base tokens (exactly the base model's), task class token] after the final norm."""
        state = self.intermediate_stem(x)
        for i in range(len(self.base.blocks)):
            state = self.intermediate_layer(i, state)
        return self.intermediate_final(state)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> Any:
        pooled = features[:, -1]
        return pooled if pre_logits else self.head(pooled)

    def build_classifier(self, num_classes: int) -> nn.Module:
        return linear_or_identity(self.num_features, num_classes)

    def global_pool_choices(self) -> list[str]:
        return ["token"]

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "memories"}


def build_memory_vit(config: MemoryVitConfig, ctx: BuildContext) -> MemoryVit:
    """Learnable-memory adapter over a freshly built base model."""
    base = ctx.registry.get("architecture", config.base.type).factory(config.base, ctx)
    return MemoryVit(base, config.memories_per_layer, config.num_classes, config.freeze_base)


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "memory-vit",
        build_memory_vit,
        MemoryVitConfig,
        tags={"image", "mask"},
        needs={"token-mask"},
        example={
            "memories_per_layer": 2,
            "num_classes": 10,
            "base": {"type": "vit", **TINY_VIT},
        },
    )
