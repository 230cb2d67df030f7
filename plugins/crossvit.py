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
from vitzoo.config import NonNegativeInt, PositiveFloat, PositiveInt, Rate, SizeOrPair, check_child


class CrossVitBranch(BaseModel):
    """One branch: its patch size, width and number of blocks per multi-scale block (N or M)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    patch_size: PositiveInt
    dim: PositiveInt
    depth: PositiveInt
    #: The size this branch sees: the input is resized to it first (bicubic, align_corners
    #: false, as the official code / timm's ``img_scale``). None: the model's ``image_size``.
    #: The released models give the large branch 224 of a 240 input (197 positions).
    image_size: int | tuple[int, int] | None = None

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
        for name in ("num_heads", "multi_scale_blocks", "cross_depth", "in_chans"):
            if getattr(self, name) < 1:
                raise SpecValueError(name, f"must be a positive integer, got {getattr(self, name)}")
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


class CrossViT(VitzooModel):
    """Two-branch multi-scale ViT. ``forward_features`` returns both final class tokens,
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
                image_size=size,
                num_prefix_tokens=1,
            )
            for b, size in zip(branches, self.branch_sizes, strict=True)
        ]
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
        self.pos_drop = nn.Dropout(config.emb_dropout)
        self.stages = nn.ModuleList()
        for k in range(config.multi_scale_blocks):
            stage = nn.Module()
            stage.branches = nn.ModuleList(
                nn.ModuleList(
                    bctx.build(
                        "block",
                        config.block,
                        grid=grid,
                        layer_index=k * b.depth + i,
                        depth=total,
                        drop_path=rates[min(k * b.depth + i, len(rates) - 1)],
                        attention=config.attention,
                        mlp=config.mlp,
                    )
                    for i in range(b.depth)
                )
                for b, bctx, grid in zip(branches, self.contexts, grids, strict=True)
            )
            stage.fusions = nn.ModuleList(
                CrossAttentionFusion(
                    dim, other, config.num_heads, config.cross_depth, config.norm_eps
                )
                for dim, other in ((self.dims[0], self.dims[1]), (self.dims[1], self.dims[0]))
            )
            self.stages.append(stage)
        self.norms = nn.ModuleList(nn.LayerNorm(d, eps=config.norm_eps) for d in self.dims)
        self.num_features = sum(self.dims)
        self.num_classes = config.num_classes
        self.heads = self._build_heads(config.num_classes)
        self.apply(init_vit_weights)
        for token in self.cls_tokens:
            nn.init.trunc_normal_(token, std=0.02)

    def _build_heads(self, num_classes: int) -> nn.ModuleList:
        return nn.ModuleList(
            c.replace(num_features=c.dim).build("head", self.config.head, num_classes=num_classes)
            for c in self.contexts
        )

    def _run(
        self, x: torch.Tensor, keep: set[int] | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        streams = []
        for patch, cls, posenc, size in zip(
            self.patches, self.cls_tokens, self.posencs, self.branch_resize, strict=True
        ):
            tokens, grid = patch(x if size is None else resize_to(x, size))
            tokens = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
            streams.append(self.pos_drop(posenc(tokens, grid, 1)))
        outputs: list[torch.Tensor] = []
        for k, stage in enumerate(self.stages):
            for s, blocks in enumerate(stage.branches):
                for block in blocks:
                    streams[s] = run_block(block, streams[s], self.grad_checkpointing)
            fused = [
                fusion(streams[s][:, :1], streams[1 - s][:, 1:])
                for s, fusion in enumerate(stage.fusions)
            ]
            streams = [torch.cat([f, t[:, 1:]], dim=1) for f, t in zip(fused, streams, strict=True)]
            if keep is not None:
                outputs.extend(t for s, t in enumerate(streams) if 2 * k + s in keep)
        return [norm(t) for norm, t in zip(self.norms, streams, strict=True)], outputs

    # -- the model protocol ------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        streams, _ = self._run(x)
        return torch.cat([t[:, 0] for t in streams], dim=-1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> Any:
        if pre_logits or self.num_classes == 0:
            return features  # no classifier: both class tokens, concatenated
        parts = features.split(list(self.dims), dim=-1)
        logits = [head(p) for head, p in zip(self.heads, parts, strict=True)]
        return (logits[0] + logits[1]) / 2

    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Branch outputs after each multi-scale block, indexed small_0, large_0, small_1, ...

        Index ``2k`` is the small branch after block ``k``, ``2k + 1`` the large branch.
        """
        depth = 2 * len(self.stages)
        keep = set(range(depth)) if indices is None else {i % depth for i in indices}
        streams, outputs = self._run(x, keep)
        return torch.cat([t[:, 0] for t in streams], dim=-1), outputs

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        heads = self._build_heads(num_classes)
        heads.apply(init_vit_weights)
        self.heads = heads.to(self.norms[0].weight.device)

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "cls_tokens" in n or "pos_embed" in n}


def build_crossvit(config: CrossVitConfig, ctx: BuildContext) -> CrossViT:
    """CrossViT dual-branch transformer."""
    return CrossViT(config, ctx)


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "crossvit",
        build_crossvit,
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
