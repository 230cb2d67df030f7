"""Built-in plugin: video and volume transformers.

* ``tubelet`` patchifier: non-overlapping (frames x height x width) tubelets, each linearly
  projected (ViViT's "tubelet embedding"); it reports a 3D grid (t, h, w).
* ``vit3d`` / ``simple-vit-3d``: the ViT base on (B, C, T, H, W) input with a ``frames`` field;
  learned positions resample in 3D and ``sincos`` builds a 3D table, so nothing else changes.
* ``factorized-space-time`` block: ViViT Model 3 (factorised self-attention): attention within
  each frame, then across frames at each spatial position, then the MLP.
* ``vivit``: ViViT (Arnab et al. 2021, arXiv:2103.15691), Model 2 (factorised encoder: a spatial
  transformer per temporal index, then a temporal transformer over the per-frame class tokens) or
  Model 3 (the block above), with a frame padding mask for batches of shorter videos.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator
from torch import nn

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.examples import GRID_ONLY_HOST
from vitzoo.components.grid import FollowsGrid
from vitzoo.components.layers import (
    drop_path_rates,
    init_vit_weights,
    maybe_drop_path,
    maybe_layer_scale,
    to_pair,
)
from vitzoo.components.model import VitzooModel, run_block
from vitzoo.components.patchify import Patchifier, check_divisible
from vitzoo.components.vit import VitConfig, build_vit, tokens_to_grid_map
from vitzoo.config import NonNegativeInt, PositiveFloat, PositiveInt, Rate, SizeOrPair, check_child

#: A tiny video host for the conformance suite: 4 frames of 32x32, tubelets 2x8x8.
TINY_VIDEO = {
    "image_size": 32,
    "frames": 4,
    "dim": 48,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "tubelet", "patch_size": 8, "frame_patch_size": 2},
}


# ---------------------------------------------------------------------------------------------
# Tubelet patchifier
# ---------------------------------------------------------------------------------------------
class TubeletConfig(ComponentConfig):
    """Non-overlapping tubelets of ``frame_patch_size`` frames x ``patch_size`` pixels."""

    type: Literal["tubelet"] = "tubelet"
    patch_size: SizeOrPair = 16
    frame_patch_size: PositiveInt = 2
    bias: bool = True
    #: Input extent it tiles: (T, H, W).
    spatial_dims: ClassVar[int] = 3

    def tubelet(self) -> tuple[int, int, int]:
        return (self.frame_patch_size, *to_pair(self.patch_size))  # type: ignore[return-value]

    def check(self, image_size: Any = None, **_: Any) -> None:
        if self.frame_patch_size < 1:
            raise SpecValueError("frame_patch_size", "must be >= 1")
        if image_size is None:
            return
        if len(image_size) != 3:
            raise SpecValueError(
                "type",
                "the tubelet patchifier needs video input (C, T, H, W); use it in a video model "
                "(allowed: vit3d, simple-vit-3d, vivit)",
            )
        frames, *hw = image_size
        if frames % self.frame_patch_size:
            allowed = [d for d in range(1, frames + 1) if frames % d == 0]
            raise SpecValueError(
                "frame_patch_size",
                f"frame patch size {self.frame_patch_size} does not divide frames={frames}; "
                f"allowed: {allowed}",
            )
        check_divisible(tuple(hw), self.patch_size)


class TubeletEmbed(Patchifier):
    """A Conv3d with stride = kernel: one linear map shared by all flattened tubelets."""

    spatial_dims = 3

    def __init__(self, in_chans: int, dim: int, tubelet: tuple[int, int, int], bias: bool) -> None:
        super().__init__()
        self.tubelet = tubelet
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=tubelet, stride=tubelet, bias=bias)

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // p for s, p in zip(image_size, self.tubelet, strict=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 5:
            raise ValueError(
                f"tubelet patchifier expects video (B, C, T, H, W), got shape {tuple(x.shape)}"
            )
        if any(s % p for s, p in zip(x.shape[2:], self.tubelet, strict=True)):
            raise ValueError(
                f"video size {tuple(x.shape[2:])} is not divisible by tubelet {self.tubelet}"
            )
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def build_tubelet(config: TubeletConfig, ctx: BuildContext) -> TubeletEmbed:
    """Tubelet embedding for video / volumes."""
    return TubeletEmbed(ctx.in_chans, ctx.dim, config.tubelet(), config.bias)


# ---------------------------------------------------------------------------------------------
# 3D ViT: the ViT base with a frames axis
# ---------------------------------------------------------------------------------------------
def check_video_patch(patch: Any) -> None:
    if getattr(patch, "spatial_dims", 2) != 3:
        raise SpecValueError(
            "patch.type",
            f"{patch.type!r} tiles images; a video model needs a 3D patchifier (allowed: tubelet)",
        )


class Vit3dConfig(VitConfig):
    """ViT on video / volumes (B, C, T, H, W): tubelets, 3D learned positions, class token."""

    type: Literal["vit3d"] = "vit3d"
    image_size: SizeOrPair = 128
    frames: PositiveInt = 16
    patch: ComponentSpec("patchifier") = component_default(
        type="tubelet", patch_size=16, frame_patch_size=2
    )

    def input_extent(self) -> tuple[int, ...]:
        return (self.frames, *to_pair(self.image_size))

    @model_validator(mode="after")
    def _video_rules(self) -> Vit3dConfig:
        if self.frames < 1:
            raise SpecValueError("frames", f"must be >= 1, got {self.frames}")
        check_video_patch(self.patch)
        return self


class SimpleVit3dConfig(Vit3dConfig):
    """SimpleViT on video: tubelets, fixed 3D sin-cos positions, mean pooling, no class token."""

    type: Literal["simple-vit-3d"] = "simple-vit-3d"
    #: vit-pytorch's ``posemb_sincos_3d`` table: [x, y, t] blocks, frequencies i / (d/6 - 1).
    posenc: ComponentSpec("posenc") = component_default(
        type="sincos", reverse_axes=True, endpoint=True
    )
    pool: ComponentSpec("pooling") = component_default(type="mean")
    class_token: bool = False


# ---------------------------------------------------------------------------------------------
# Factorised space-time block (ViViT Model 3)
# ---------------------------------------------------------------------------------------------
class FactorizedBlockConfig(ComponentConfig):
    """x + attn_space(norm(x)) per frame; x + attn_time(norm(x)) per position; x + mlp(norm(x))."""

    type: Literal["factorized-space-time"] = "factorized-space-time"
    layer_scale: PositiveFloat | None = None
    norm_eps: PositiveFloat = 1e-6

    def check(
        self,
        spatial_dims: int = 3,
        class_token: bool = False,
        distillation_token: bool = False,
        **_: Any,
    ) -> None:
        if spatial_dims != 3:
            raise SpecValueError(
                "type", "factorized-space-time blocks need a video model (T, H, W)"
            )
        if class_token or distillation_token:
            raise SpecValueError(
                "type",
                "factorized-space-time blocks reshape tokens into (frames, positions) and take no "
                "prefix tokens; set class_token: false and use pool: mean",
            )


def time_major_mask(mask: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a (B, T*S) token mask into per-frame (B*T, S) and per-position (B*S, T) masks.

    A frame that is all padding attends freely within itself (its outputs are ignored), so no
    softmax row is ever fully masked.
    """
    batch = mask.shape[0]
    m = mask.reshape(batch, frames, -1)
    spatial = m | ~m.any(dim=-1, keepdim=True)
    return spatial.reshape(batch * frames, -1), m.transpose(1, 2).reshape(-1, frames)


class FactorizedSpaceTimeBlock(FollowsGrid, nn.Module):
    """ViViT's factorised self-attention: spatial attention, temporal attention, then the MLP."""

    def __init__(self, config: FactorizedBlockConfig, ctx: BuildContext) -> None:
        super().__init__()
        if len(ctx.grid) != 3 or ctx.num_prefix_tokens:
            raise ValueError("factorized-space-time blocks need a (t, h, w) grid and no prefix")
        dim, eps = ctx.dim, config.norm_eps
        self.grid = tuple(ctx.grid)  # only the frame count matters: grid[0]
        self.norm_space = nn.LayerNorm(dim, eps=eps)
        self.attn_space = ctx.build("attention", ctx.attention)
        self.ls_space = maybe_layer_scale(dim, config.layer_scale)
        self.norm_time = nn.LayerNorm(dim, eps=eps)
        self.attn_time = ctx.build("attention", ctx.attention)
        self.ls_time = maybe_layer_scale(dim, config.layer_scale)
        self.norm_mlp = nn.LayerNorm(dim, eps=eps)
        self.mlp = ctx.build("mlp", ctx.mlp)
        self.ls_mlp = maybe_layer_scale(dim, config.layer_scale)
        self.drop_path = maybe_drop_path(ctx.drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and mask.ndim != 2:
            raise ValueError("factorized-space-time blocks take a (B, N) token padding mask")
        b, n, d = x.shape
        t = self.grid[0]
        s = n // t
        space_mask, time_mask = (None, None) if mask is None else time_major_mask(mask, t)
        xs = x.reshape(b * t, s, d)
        xs = xs + self.drop_path(
            self.ls_space(self.attn_space(self.norm_space(xs), mask=space_mask))
        )
        xt = xs.reshape(b, t, s, d).transpose(1, 2).reshape(b * s, t, d)
        xt = xt + self.drop_path(self.ls_time(self.attn_time(self.norm_time(xt), mask=time_mask)))
        x = xt.reshape(b, s, t, d).transpose(1, 2).reshape(b, n, d)
        return x + self.drop_path(self.ls_mlp(self.mlp(self.norm_mlp(x))))


def build_factorized_block(
    config: FactorizedBlockConfig, ctx: BuildContext
) -> FactorizedSpaceTimeBlock:
    """Factorised space-time block (ViViT Model 3)."""
    return FactorizedSpaceTimeBlock(config, ctx)


# ---------------------------------------------------------------------------------------------
# ViViT
# ---------------------------------------------------------------------------------------------
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
        for name in ("frames", "dim", "spatial_depth", "temporal_depth", "num_heads", "in_chans"):
            if getattr(self, name) < 1:
                raise SpecValueError(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.dim % self.num_heads and getattr(self.attention, "head_dim", None) is None:
            raise SpecValueError(
                "num_heads", f"num_heads={self.num_heads} must divide dim={self.dim}"
            )
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
        context = dict(
            image_size=self.input_extent(),
            in_chans=self.in_chans,
            dim=self.dim,
            num_heads=self.num_heads,
            spatial_dims=3,
            class_token=False,
            distillation_token=False,
        )
        for child in ("patch", "attention", "mlp", "head"):
            check_child(getattr(self, child), child, **context)
        if not fsa:
            check_child(self.block, "block", **{**context, "class_token": True, "spatial_dims": 2})
        return self


def tubelet_mask(frame_mask: torch.Tensor, frame_patch: int) -> torch.Tensor:
    """(B, T) frame mask -> (B, T') tubelet mask: a tubelet is real if any of its frames is."""
    return frame_mask.reshape(frame_mask.shape[0], -1, frame_patch).any(dim=-1)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return tokens.mean(dim=1)
    weight = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)


#: ViViT's state between spatial blocks: tokens, token grid, batch size, token mask.
VivitState = tuple[torch.Tensor, tuple[int, ...], int, torch.Tensor | None]


class ViViT(VitzooModel):
    """Video Vision Transformer. ``forward(x, frame_mask=None)``; ``frame_mask`` (B, T) is True
    for real frames, so a batch can hold videos padded to the same length."""

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
            self.spatial = nn.ModuleList(
                base.build(
                    "block",
                    block,
                    grid=self.grid,
                    layer_index=i,
                    drop_path=rates[i],
                    attention=config.attention,
                    mlp=config.mlp,
                )
                for i in range(depth)
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
        return nn.ModuleList(
            base.build(
                "block",
                c.block,
                grid=grid,
                num_prefix_tokens=1,
                layer_index=start + i,
                drop_path=rates[start + i],
                attention=c.attention,
                mlp=c.mlp,
            )
            for i in range(depth)
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
            pooled = masked_mean(features, mask)
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


def build_vivit(config: VivitConfig, ctx: BuildContext) -> ViViT:
    """ViViT (factorised encoder or factorised self-attention)."""
    return ViViT(config, ctx)


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------
@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "tubelet",
        build_tubelet,
        TubeletConfig,
        tags={"video"},
        example={
            "config": {"patch_size": 8, "frame_patch_size": 2},
            "model": TINY_VIDEO | {"type": "vit3d"},
        },
    )


@hookimpl
def register_blocks(register: Any) -> None:
    register(
        "factorized-space-time",
        build_factorized_block,
        FactorizedBlockConfig,
        tags={"mask", "video"},
        example={"model": TINY_VIDEO | {"type": "vit3d", **GRID_ONLY_HOST}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("vit3d", build_vit, Vit3dConfig, tags={"video", "tokens"}, example=TINY_VIDEO)
    register(
        "simple-vit-3d", build_vit, SimpleVit3dConfig, tags={"video", "tokens"}, example=TINY_VIDEO
    )
    tiny_vivit = {k: v for k, v in TINY_VIDEO.items() if k != "depth"}
    register(
        "vivit",
        build_vivit,
        VivitConfig,
        tags={"video", "mask"},
        example=tiny_vivit | {"spatial_depth": 1, "temporal_depth": 1},
    )
