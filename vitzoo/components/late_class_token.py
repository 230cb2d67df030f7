"""The late-class-token transformer (CaiT, Touvron et al. 2021; also XCiT, El-Nouby et al. 2021).

A ViT whose self-attention stage runs on patch tokens only; the class token joins afterwards and
``cls_depth`` class-attention blocks update it by attending to [cls, patches]. CaiT and XCiT
share this structure and differ only in the registered parts they slot in (talking-heads attention
vs. cross-covariance attention, pre-norm vs. XCiT blocks, CaiT's class-attention block, which
updates the class token alone, vs. XCiT's released one, which updates the patch tokens too), so the
model lives here, in the core, and each plugin subclasses :class:`LateClassTokenConfig` with its
own ``type`` and defaults.
Neither plugin then needs the other. The block maths is :mod:`vitzoo.components.class_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.layers import init_vit_weights
from vitzoo.components.model import run_block
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import (
    ComponentSpec,
    PositiveInt,
    SpecValueError,
    check_positive,
    component_default,
)


class LateClassTokenConfig(VitConfig):
    """ViT fields plus the class-attention stage: ``cls_depth`` blocks of type ``class_block``.

    A base for architectures (subclasses set ``type`` and their defaults); it is not registered
    itself. ``attention`` / ``mlp`` are shared by both stages, as in CaiT.
    """

    cls_depth: PositiveInt = 2
    class_block: ComponentSpec("block") = component_default(type="class-attention")

    @model_validator(mode="after")
    def _late_class_token_rules(self) -> LateClassTokenConfig:
        if not self.class_token:
            raise SpecValueError(
                "class_token", f"{self.type}'s class-attention stage needs class_token: true"
            )
        if self.distillation_token:
            raise SpecValueError(
                "distillation_token", f"not supported by {self.type}; allowed: false"
            )
        check_positive(cls_depth=self.cls_depth)
        return self

    def class_drop_path_rates(self) -> list[float]:
        """Stochastic depth of the class-attention blocks (CaiT: ``drop_path_rate`` each)."""
        return [self.drop_path_rate] * self.cls_depth


class LateClassTokenTransformer(VisionTransformer):
    """The ViT base on patch tokens only, followed by a late-class-token stage.

    ``encode`` runs both stages and returns [cls, (registers), patches] normalised, so the output
    carries ``num_prefix_tokens`` prefix tokens like every other flat-token model.
    """

    def __init__(self, config: LateClassTokenConfig, ctx: BuildContext) -> None:
        super().__init__(config.model_copy(update={"class_token": False}), ctx)
        self.config = config
        dim = config.dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.num_prefix_tokens += 1
        grid = self.patch.grid_for(self.input_size[1:])
        rates = config.class_drop_path_rates()
        base = ctx.replace(dim=dim, num_heads=config.num_heads, in_chans=config.in_chans)
        self.class_blocks = self.stack_blocks(
            base,
            config.class_block,
            rates,
            grid,
            first_layer=config.depth,
        )
        self.class_blocks.apply(init_vit_weights)

    def prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        # The class token is not part of the self-attention stage: it joins in ``encode``.
        return []

    def _class_stage_input(
        self, tokens: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        if mask is not None:
            if mask.ndim != 2:
                raise ValueError(f"{self.config.type} supports key-padding masks (B, N) only")
            mask = F.pad(mask, (1, 0), value=True)
        return torch.cat([cls, tokens], dim=1), mask

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.embed(x)
        return self.encode(self.drop_patches(tokens, num_prefix=self.num_prefix_tokens - 1))

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            tokens = run_block(block, tokens, self.grad_checkpointing, mask=mask)
        tokens, mask = self._class_stage_input(tokens, mask)
        for block in self.class_blocks:
            tokens = run_block(block, tokens, self.grad_checkpointing, mask=mask)
        return self.norm(tokens)

    # -- structure: feature layers are the self-attention blocks (the class stage changes only
    # the class token, so it adds no feature map); the class stage runs in the final step
    def intermediate_prefix_tokens(self) -> int:
        return self.num_prefix_tokens - 1

    def intermediate_final(self, state: tuple[torch.Tensor, tuple[int, ...]]) -> torch.Tensor:
        tokens, _ = self._class_stage_input(state[0], None)
        for block in self.class_blocks:
            tokens = run_block(block, tokens, self.grad_checkpointing)
        return self.norm(tokens)

    def truncate_feature_layers(self, keep: int) -> None:
        super().truncate_feature_layers(keep)
        self.class_blocks = nn.ModuleList()
