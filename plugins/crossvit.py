"""Built-in plugin: CrossViT (Chen, Fan, Panda 2021, arXiv:2103.14899).

Two ViT branches see the same image at two patch sizes: a small-patch branch (fine grid, narrow,
shallow) and a large-patch branch (coarse grid, wide, deeper). ``multi_scale_blocks`` times, each
branch runs its own transformer blocks, then the branches exchange information through their class
tokens only: branch A's class token is projected to branch B's width (f), attends as the single
query over [itself, B's patch tokens] (cross-attention = CaiT-style class attention, shared from
:mod:`vitzoo.components.class_attention`), and is projected back (g). Each branch ends with its own
norm and head; the logits are averaged.

Branch blocks, attention, MLP, patchifier and positions are the registered components named in the
spec, built once per branch at that branch's width. A branch may see a resized input
(``image_size`` of the branch): the released models (official code, timm) feed the large branch
a bicubic 224-px resize of the 240-px image.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.crossvit_weights import CONVERTERS

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig
from vitzoo.components.class_attention import ClassAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.layers import drop_path_rates, init_vit_weights, to_pair
from vitzoo.components.model import VitzooModel, run_block
from vitzoo.components.patchify import Patchifier, check_divisible
from vitzoo.components.vit import tokens_to_grid_map
from vitzoo.config import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Rate,
    SizeOrPair,
    check_child,
    check_positive,
)


class CrossVitBranch(BaseModel):
    """One branch: its patch size, width and number of blocks per multi-scale block (N or M)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    patch_size: PositiveInt
    dim: PositiveInt
    depth: PositiveInt
    #: The size this branch sees: the input is resized to it first (bicubic, align_corners
    #: false, as the official code / timm's ``img_scale``). None: the model's ``image_size``.
    #: The released models give the large branch 224 of a 240 input (197 positions).
    image_size: SizeOrPair | None = None

    def size_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return image_size if self.image_size is None else to_pair(self.image_size)


class CrossVitConfig(ComponentConfig):
    """CrossViT: small- and large-patch branches fused by class-token cross-attention."""

    type: Literal["crossvit"] = "crossvit"
    image_size: SizeOrPair = 240
    in_chans: PositiveInt = 3
    num_classes: NonNegativeInt = 1000
    small: CrossVitBranch = CrossVitBranch(patch_size=12, dim=192, depth=1)
    large: CrossVitBranch = CrossVitBranch(patch_size=16, dim=384, depth=4)
    num_heads: PositiveInt = 6
    multi_scale_blocks: PositiveInt = 3
    cross_depth: PositiveInt = 1
    patch: ComponentSpec("patchifier") = component_default(type="linear")
    posenc: ComponentSpec("posenc") = component_default(type="learned")
    attention: ComponentSpec("attention") = component_default(type="mhsa")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm")
    head: ComponentSpec("head") = component_default(type="linear")
    emb_dropout: Rate = 0.0
    drop_path_rate: Rate = 0.0
    norm_eps: PositiveFloat = 1e-6

    @model_validator(mode="after")
    def _rules(self) -> CrossVitConfig:
        check_positive(
            num_heads=self.num_heads,
            multi_scale_blocks=self.multi_scale_blocks,
            cross_depth=self.cross_depth,
            in_chans=self.in_chans,
        )
        if "patch_size" not in type(self.patch).model_fields:
            raise SpecValueError(
                "patch.type", "CrossViT sets each branch's patch size; the patchifier needs one"
            )
        for name in ("small", "large"):
            branch: CrossVitBranch = getattr(self, name)
            if branch.dim < 1 or branch.depth < 0 or branch.patch_size < 1:
                raise SpecValueError(name, "dim and patch_size must be >= 1, depth >= 0")
            if min(branch.size_for((1, 1))) < 1:
                raise SpecValueError((name, "image_size"), "must be positive")
            image_size = branch.size_for(to_pair(self.image_size))
            if branch.dim % self.num_heads:
                raise SpecValueError(
                    "num_heads", f"num_heads={self.num_heads} must divide {name}.dim={branch.dim}"
                )
            context = dict(
                image_size=image_size,
                in_chans=self.in_chans,
                dim=branch.dim,
                num_heads=self.num_heads,
                spatial_dims=2,
                class_token=True,
                distillation_token=False,
            )
            patch = self.patch.model_copy(update={"patch_size": branch.patch_size})
            try:
                check_child(patch, "patch", **context)
            except SpecValueError as exc:
                raise SpecValueError((name, "patch_size"), exc.message) from None
            for child in ("posenc", "attention", "mlp", "block", "head"):
                check_child(getattr(self, child), child, **context)
        return self


# -- the "dagger" models' patch embedding -------------------------------------------------------
#: (kernel, stride, padding) of the second and third convs, by patch size; the first conv is
#: always 7x7 stride 4 (CrossViT Sec. 4.1, "multi-conv" in the authors' code and timm).
MULTI_CONV_TAIL: dict[int, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    12: ((3, 3, 0), (3, 1, 1)),
    16: ((3, 2, 1), (3, 2, 1)),
}


class MultiConvPatchConfig(ComponentConfig):
    """CrossViT-dagger patches: three convs (7x7 s4, then two 3x3) with ReLU, widths D/4, D/2, D."""

    type: Literal["multi-conv"] = "multi-conv"
    patch_size: Literal[12, 16] = 16

    def check(self, image_size: Any = None, dim: int | None = None, **_: Any) -> None:
        if dim is not None and dim % 4:
            raise SpecValueError(
                "patch_size", f"the multi-conv stem needs dim divisible by 4, got {dim}"
            )
        if image_size is not None:
            check_divisible(image_size, self.patch_size)


class MultiConvPatchEmbed(Patchifier):
    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        (k2, s2, p2), (k3, s3, p3) = MULTI_CONV_TAIL[patch_size]
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, dim // 4, 7, 4, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // 4, dim // 2, k2, s2, p2),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // 2, dim, k3, s3, p3),
        )

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // self.patch_size for s in image_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 4:
            raise ValueError(f"multi-conv expects images (B, C, H, W), got {tuple(x.shape)}")
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def build_multi_conv_patch(config: MultiConvPatchConfig, ctx: BuildContext) -> MultiConvPatchEmbed:
    """CrossViT-dagger three-conv patch embedding."""
    return MultiConvPatchEmbed(ctx.in_chans, ctx.dim, config.patch_size)


# -- the two-branch model -------------------------------------------------------------------------


def resize_to(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A branch's view of the input: bicubic resize (align_corners false), as the released code."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bicubic", align_corners=False)


class CrossAttentionFusion(nn.Module):
    """Branch A's class token visits branch B: g(f(cls_A) + CA(LN([f(cls_A), patches_B])))."""

    def __init__(self, dim: int, other_dim: int, num_heads: int, depth: int, eps: float) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.LayerNorm(dim, eps=eps), nn.GELU(), nn.Linear(dim, other_dim)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(other_dim, eps=eps) for _ in range(depth))
        self.attns = nn.ModuleList(
            ClassAttention(other_dim, num_heads, MhsaConfig()) for _ in range(depth)
        )
        self.revert = nn.Sequential(
            nn.LayerNorm(other_dim, eps=eps), nn.GELU(), nn.Linear(other_dim, dim)
        )

    def forward(self, cls: torch.Tensor, other_patches: torch.Tensor) -> torch.Tensor:
        query = self.project(cls)
        for norm, attn in zip(self.norms, self.attns, strict=True):
            query = query + attn(norm(torch.cat([query, other_patches], dim=1)))
        return self.revert(query)


#: Both branches' token streams and their patch grids.
CrossVitState = tuple[list[torch.Tensor], list[tuple[int, ...]]]


class CrossViT(VitzooModel):
    """CrossViT dual-branch transformer.

    Two-branch multi-scale ViT. ``forward_features`` returns both final class tokens,
    concatenated (B, small.dim + large.dim); ``forward_head`` splits them for the two heads."""

    def __init__(self, config: CrossVitConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.config = config
        image_size = to_pair(config.image_size)
        self.input_size = (config.in_chans, *image_size)
        branches = (config.small, config.large)
        self.dims = tuple(b.dim for b in branches)
        self.num_prefix_tokens = 1
        total = config.multi_scale_blocks * max(b.depth for b in branches)
        rates = drop_path_rates(config.drop_path_rate, max(total, 1))
        #: Where a branch resizes its input (None: it sees the input as it comes).
        self.branch_resize = [
            None if b.image_size is None else to_pair(b.image_size) for b in branches
        ]
        self.branch_sizes = [b.size_for(image_size) for b in branches]
        self.contexts = [
            ctx.replace(
                dim=b.dim,
                num_heads=config.num_heads,
                in_chans=config.in_chans,
                num_prefix_tokens=1,
            )
            for b in branches
        ]
        grids = self._build_embeddings(branches)
        self.pos_drop = nn.Dropout(config.emb_dropout)
        self.stages = nn.ModuleList(
            self._build_stage(k, branches, grids, rates) for k in range(config.multi_scale_blocks)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d, eps=config.norm_eps) for d in self.dims)
        self.num_features = sum(self.dims)
        self.num_classes = config.num_classes
        self.heads = self._build_heads(config.num_classes)
        self.apply(init_vit_weights)
        for token in self.cls_tokens:
            nn.init.trunc_normal_(token, std=0.02)

    def _build_embeddings(self, branches: tuple[CrossVitBranch, ...]) -> list[tuple[int, ...]]:
        """Each branch's patchifier (at its patch size), class token and positions; its grid."""
        config = self.config
        self.patches = nn.ModuleList()
        self.cls_tokens = nn.ParameterList()
        self.posencs = nn.ModuleList()
        grids = []
        for b, bctx, size in zip(branches, self.contexts, self.branch_sizes, strict=True):
            patch = bctx.build(
                "patchifier", config.patch.model_copy(update={"patch_size": b.patch_size})
            )
            grid = patch.grid_for(size)
            grids.append(grid)
            self.patches.append(patch)
            self.cls_tokens.append(nn.Parameter(torch.zeros(1, 1, b.dim)))
            self.posencs.append(bctx.build("posenc", config.posenc, grid=grid))
        return grids

    def _build_stage(
        self,
        k: int,
        branches: tuple[CrossVitBranch, ...],
        grids: list[tuple[int, ...]],
        rates: list[float],
    ) -> nn.Module:
        """Multi-scale block ``k``: each branch's blocks, then the two class-token fusions."""
        config = self.config
        stage = nn.Module()
        stage.branches = nn.ModuleList(
            nn.ModuleList(
                bctx.build(
                    "block",
                    config.block,
                    grid=grid,
                    layer_index=k * b.depth + i,
                    drop_path=rates[min(k * b.depth + i, len(rates) - 1)],
                    attention=config.attention,
                    mlp=config.mlp,
                )
                for i in range(b.depth)
            )
            for b, bctx, grid in zip(branches, self.contexts, grids, strict=True)
        )
        stage.fusions = nn.ModuleList(
            CrossAttentionFusion(dim, other, config.num_heads, config.cross_depth, config.norm_eps)
            for dim, other in ((self.dims[0], self.dims[1]), (self.dims[1], self.dims[0]))
        )
        return stage

    def _build_heads(self, num_classes: int) -> nn.ModuleList:
        return nn.ModuleList(
            c.replace(num_features=c.dim).build("head", self.config.head, num_classes=num_classes)
            for c in self.contexts
        )

    # -- structure: feature layer 2k is the small branch after multi-scale block k, 2k + 1 the
    # large branch (each on its own patch grid); the final step is the two normed class tokens
    def feature_layer_names(self) -> list[str]:
        return [f"stages.{k}.branches.{s}" for k in range(len(self.stages)) for s in (0, 1)]

    def intermediate_stem(self, x: torch.Tensor) -> CrossVitState:
        streams, grids = [], []
        for patch, cls, posenc, size in zip(
            self.patches, self.cls_tokens, self.posencs, self.branch_resize, strict=True
        ):
            tokens, grid = patch(x if size is None else resize_to(x, size))
            tokens = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
            streams.append(self.pos_drop(posenc(tokens, grid, 1)))
            grids.append(grid)
        return streams, grids

    def intermediate_layer(self, index: int, state: CrossVitState) -> CrossVitState:
        if index % 2:  # the large branch's map of the stage the even index ran
            return state
        streams, grids = list(state[0]), state[1]
        stage = self.stages[index // 2]
        for s, blocks in enumerate(stage.branches):
            for block in blocks:
                streams[s] = run_block(block, streams[s], self.grad_checkpointing)
        fused = [
            fusion(streams[s][:, :1], streams[1 - s][:, 1:])
            for s, fusion in enumerate(stage.fusions)
        ]
        streams = [torch.cat([f, t[:, 1:]], dim=1) for f, t in zip(fused, streams, strict=True)]
        return streams, grids

    def intermediate_map(self, index: int, state: CrossVitState, norm: bool) -> torch.Tensor:
        branch = index % 2
        patches = state[0][branch][:, 1:]
        if norm:
            patches = self.norms[branch](patches)
        return tokens_to_grid_map(patches, state[1][branch])

    def intermediate_final(self, state: CrossVitState) -> torch.Tensor:
        return torch.cat([norm(t[:, 0]) for norm, t in zip(self.norms, state[0], strict=True)], -1)

    def truncate_feature_layers(self, keep: int) -> None:
        self.stages = self.stages[: (keep + 1) // 2]

    # -- the model protocol ------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        state = self.intermediate_stem(x)
        for k in range(len(self.stages)):
            state = self.intermediate_layer(2 * k, state)
        return self.intermediate_final(state)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> Any:
        if pre_logits or self.num_classes == 0:
            return features  # no classifier: both class tokens, concatenated
        parts = features.split(list(self.dims), dim=-1)
        logits = [head(p) for head, p in zip(self.heads, parts, strict=True)]
        return (logits[0] + logits[1]) / 2

    classifier_attr = "heads"

    def build_classifier(self, num_classes: int) -> nn.Module:
        heads = self._build_heads(num_classes)
        heads.apply(init_vit_weights)
        return heads

    def global_pool_choices(self) -> list[str]:
        return ["token"]

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "cls_tokens" in n or "pos_embed" in n}


@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "multi-conv",
        build_multi_conv_patch,
        MultiConvPatchConfig,
        tags={"image"},
        example={"config": {"patch_size": 16}, "model": {"image_size": 32}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "crossvit",
        CrossViT,
        CrossVitConfig,
        tags={"image"},
        example={
            "image_size": 32,
            "num_classes": 10,
            "num_heads": 2,
            "multi_scale_blocks": 1,
            "small": {"patch_size": 4, "dim": 16, "depth": 1},
            "large": {"patch_size": 8, "dim": 32, "depth": 1},
        },
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "crossvit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
