"""ViViT (Arnab et al. 2021, arXiv:2103.15691), Model 2 or Model 3.

Model 2 (factorised encoder): a spatial transformer per temporal index, then a temporal
transformer over the per-frame class tokens. Model 3 (factorised self-attention): a stack of
:mod:`~vitzoo_plugins.video.factorized_block` blocks. Both take a frame padding mask for batches
of shorter videos. The trunk's spec rules (positive sizes, heads dividing the width, the
children's context) are the ViT base's (:mod:`vitzoo.components.vit`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins.video.tubelet import check_video_patch

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default
from vitzoo.components.block import block_stack
from vitzoo.components.context import BuildContext
from vitzoo.components.layers import drop_path_rates, init_vit_weights, to_pair
from vitzoo.components.model import VitzooModel, run_block
from vitzoo.components.vit import (
    check_heads_divide_dim,
    tokens_to_grid_map,
    trunk_context,
)
from vitzoo.config import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Rate,
    SizeOrPair,
    check_child,
    check_positive,
)


class VivitConfig(ComponentConfig):
    """ViViT (Arnab et al. 2021): factorised encoder (Model 2) or factorised self-attention (Model 3).

    ``spatial_depth`` / ``temporal_depth`` are the two encoders' depths in Model 2; in Model 3
    every layer has one spatial and one temporal attention, so both must be equal (the layer count).
    """

    type: Literal["vivit"] = "vivit"
    variant: Literal["factorized-encoder", "factorized-self-attention"] = "factorized-encoder"
    image_size: SizeOrPair = 224
    frames: PositiveInt = 32
    in_chans: PositiveInt = 3
    num_classes: NonNegativeInt = 400
    dim: PositiveInt = 768
    spatial_depth: PositiveInt = 12
    temporal_depth: PositiveInt = 4
    num_heads: PositiveInt = 12
    patch: ComponentSpec("patchifier") = component_default(
        type="tubelet", patch_size=16, frame_patch_size=2
    )
    attention: ComponentSpec("attention") = component_default(type="mhsa")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm")
    head: ComponentSpec("head") = component_default(type="linear")
    pool: Literal["cls", "mean"] = "cls"
    emb_dropout: Rate = 0.0
    drop_path_rate: Rate = 0.0
    norm_eps: PositiveFloat = 1e-6

    def input_extent(self) -> tuple[int, ...]:
        return (self.frames, *to_pair(self.image_size))

    @model_validator(mode="after")
    def _rules(self) -> VivitConfig:
        check_positive(
            frames=self.frames,
            dim=self.dim,
            spatial_depth=self.spatial_depth,
            temporal_depth=self.temporal_depth,
            num_heads=self.num_heads,
            in_chans=self.in_chans,
        )
        check_heads_divide_dim(self.dim, self.num_heads, self.attention)
        check_video_patch(self.patch)
        fsa = self.variant == "factorized-self-attention"
        if fsa and self.spatial_depth != self.temporal_depth:
            raise SpecValueError(
                "temporal_depth",
                "factorized-self-attention layers each hold one spatial and one temporal "
                f"attention; temporal_depth must equal spatial_depth={self.spatial_depth}",
            )
        if fsa and self.pool == "cls":
            raise SpecValueError(
                "pool", "factorized-self-attention has no class token; allowed: mean"
            )
        context = trunk_context(self, class_token=False, distillation_token=False)
        for child in ("patch", "attention", "mlp", "head"):
            check_child(getattr(self, child), child, **context)
        if not fsa:
            check_child(self.block, "block", **{**context, "class_token": True, "spatial_dims": 2})
        return self


def tubelet_mask(frame_mask: torch.Tensor, frame_patch: int) -> torch.Tensor:
    """(B, T) frame mask -> (B, T') tubelet mask: a tubelet is real if any of its frames is."""
    return frame_mask.reshape(frame_mask.shape[0], -1, frame_patch).any(dim=-1)


def mean_over_valid_tokens(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, N, D) -> (B, D): the mean over the tokens ``mask`` (B, N) marks real (all when None).

    Padding (``mask`` False) is left out of the mean -- unlike the masked-image losses of
    :mod:`vitzoo.objectives.masking`, which average over the *masked* patches.
    """
    if mask is None:
        return tokens.mean(dim=1)
    weight = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)


#: ViViT's state between spatial blocks: tokens, token grid, batch size, token mask.
VivitState = tuple[torch.Tensor, tuple[int, ...], int, torch.Tensor | None]


class ViViT(VitzooModel):
    """ViViT (factorised encoder or factorised self-attention).

    Video Vision Transformer. ``forward(x, frame_mask=None)``; ``frame_mask`` (B, T) is True
    for real frames, so a batch can hold videos padded to the same length.
    """

    def __init__(self, config: VivitConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.config = config
        extent = config.input_extent()
        dim = config.dim
        self.input_size = (config.in_chans, *extent)
        base = ctx.replace(dim=dim, num_heads=config.num_heads, in_chans=config.in_chans)
        self.patch = base.build("patchifier", config.patch)
        self.grid = self.patch.grid_for(extent)
        self.frame_patch = extent[0] // self.grid[0]
        self.factorized_attention = config.variant == "factorized-self-attention"
        self.posenc = base.build(
            "posenc", component_of(ctx, "posenc", "learned"), grid=self.grid, num_prefix_tokens=0
        )
        self.pos_drop = nn.Dropout(config.emb_dropout)
        t = self.grid[0]
        if self.factorized_attention:
            depth = config.spatial_depth
            rates = drop_path_rates(config.drop_path_rate, depth)
            block = component_of(ctx, "block", "factorized-space-time")
            self.spatial = block_stack(
                base,
                block,
                rates,
                grid=self.grid,
                num_prefix_tokens=base.num_prefix_tokens,
                attention=config.attention,
                mlp=config.mlp,
            )
            self.temporal = nn.ModuleList()
            self.spatial_cls = self.temporal_cls = None
            self.spatial_norm: nn.Module = nn.Identity()
            self.temporal_pos = None
        else:
            total = config.spatial_depth + config.temporal_depth
            rates = drop_path_rates(config.drop_path_rate, total)
            self.spatial_cls = nn.Parameter(torch.zeros(1, 1, dim))
            self.spatial = self._stack(base, 0, config.spatial_depth, self.grid[1:], rates)
            self.spatial_norm = nn.LayerNorm(dim, eps=config.norm_eps)
            self.temporal_pos = base.build(
                "posenc", component_of(ctx, "posenc", "learned"), grid=(t,), num_prefix_tokens=0
            )
            self.temporal_cls = (
                nn.Parameter(torch.zeros(1, 1, dim)) if config.pool == "cls" else None
            )
            self.temporal = self._stack(
                base, config.spatial_depth, config.temporal_depth, (t,), rates
            )
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.num_features = dim
        self.num_classes = config.num_classes
        self.num_prefix_tokens = 0 if self.temporal_cls is None else 1
        self._head_ctx = base.replace(num_features=dim)
        self.head = self._head_ctx.build("head", config.head, num_classes=config.num_classes)
        self.apply(init_vit_weights)
        for token in (self.spatial_cls, self.temporal_cls):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)

    def _stack(
        self, base: BuildContext, start: int, depth: int, grid: tuple[int, ...], rates: list[float]
    ) -> nn.ModuleList:
        c = self.config
        return block_stack(
            base,
            c.block,
            rates[start : start + depth],
            grid=grid,
            num_prefix_tokens=1,
            attention=c.attention,
            mlp=c.mlp,
            first_layer=start,
        )

    # -- helpers -----------------------------------------------------------------------------
    def token_mask(self, frame_mask: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """(B, T) frame mask -> (B, T') mask over temporal indices (None when all are real)."""
        if frame_mask is None:
            return None
        expected = (batch, self.input_size[1])
        if frame_mask.dtype != torch.bool or tuple(frame_mask.shape) != expected:
            raise ValueError(f"frame_mask must be a boolean tensor of shape {expected}")
        if not frame_mask.any(dim=1).all():
            raise ValueError("every video needs at least one real frame in frame_mask")
        return tubelet_mask(frame_mask, self.frame_patch)

    # -- structure: the feature layers are the spatial blocks (the temporal encoder mixes whole
    # frames and has no map); state: tokens, grid, batch size, token mask
    def feature_layer_names(self) -> list[str]:
        return [f"spatial.{i}" for i in range(len(self.spatial))]

    def _stem(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> VivitState:
        tokens, grid = self.patch(x)
        b, _, d = tokens.shape
        t, s = grid[0], tokens.shape[1] // grid[0]
        tokens = self.pos_drop(self.posenc(tokens, grid, 0))
        tmask = self.token_mask(frame_mask, b)
        if self.factorized_attention:
            mask = None if tmask is None else tmask[:, :, None].expand(b, t, s).reshape(b, -1)
            return tokens, grid, b, mask
        frames = tokens.reshape(b * t, s, d)
        frames = torch.cat([self.spatial_cls.expand(b * t, -1, -1), frames], dim=1)
        return frames, grid, b, tmask

    def intermediate_stem(self, x: torch.Tensor) -> VivitState:
        return self._stem(x, None)

    def intermediate_layer(self, index: int, state: VivitState) -> VivitState:
        tokens, grid, b, mask = state
        spatial_mask = mask if self.factorized_attention else None
        tokens = run_block(self.spatial[index], tokens, self.grad_checkpointing, mask=spatial_mask)
        return tokens, grid, b, mask

    def intermediate_map(self, index: int, state: VivitState, norm: bool) -> torch.Tensor:
        tokens, grid, b, _ = state
        if not self.factorized_attention:  # (B*T', 1 + S, D) frames: drop the frame cls
            tokens = tokens[:, 1:].reshape(b, -1, tokens.shape[-1])
        elif norm:
            tokens = self.norm(tokens)
        return tokens_to_grid_map(tokens, grid)

    def _finish(self, state: VivitState) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens, grid, b, mask = state
        if self.factorized_attention:
            return self.norm(tokens), mask
        t, d = grid[0], tokens.shape[-1]
        seq = self.temporal_pos(self.spatial_norm(tokens[:, 0]).reshape(b, t, d), (t,), 0)
        if self.temporal_cls is not None:
            seq = torch.cat([self.temporal_cls.expand(b, -1, -1), seq], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        for block in self.temporal:
            seq = run_block(block, seq, self.grad_checkpointing, mask=mask)
        return self.norm(seq), mask

    def intermediate_final(self, state: VivitState) -> torch.Tensor:
        return self._finish(state)[0]

    def truncate_feature_layers(self, keep: int) -> None:
        self.spatial = self.spatial[:keep]
        self.temporal = nn.ModuleList()

    def _run(
        self, x: torch.Tensor, frame_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        state = self._stem(x, frame_mask)
        for i in range(len(self.spatial)):
            state = self.intermediate_layer(i, state)
        return self._finish(state)

    # -- the model protocol ------------------------------------------------------------------
    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> Any:
        features, mask = self._run(x, frame_mask)
        return self.forward_head(features, mask=mask)

    def forward_features(
        self, x: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._run(x, frame_mask)[0]

    def forward_head(
        self, features: torch.Tensor, pre_logits: bool = False, mask: torch.Tensor | None = None
    ) -> Any:
        """Pool (class token, or mean over real tokens when ``mask`` is given) and classify."""
        if self.temporal_cls is not None:
            pooled = features[:, 0]
        else:
            pooled = mean_over_valid_tokens(features, mask)
        return pooled if pre_logits else self.head(pooled)

    def no_weight_decay(self) -> set[str]:
        return {
            n
            for n, _ in self.named_parameters()
            if n in {"spatial_cls", "temporal_cls"} or "pos_embed" in n
        }


def component_of(ctx: BuildContext, kind: str, name: str) -> Any:
    """The default config of a registered component (for parts ViViT fixes rather than exposes)."""
    from vitzoo.spec import resolved_config

    return resolved_config(ctx.registry, kind, name)()
