"""Built-in plugin: CvT, Convolutional vision Transformer (Wu et al., ICCV 2021, arXiv:2103.15808).

Each stage starts with a **convolutional token embedding** (an overlapping strided conv + LayerNorm
that shrinks the map and widens it), then runs pre-norm blocks whose attention is the registered
``conv-proj`` attention: q, k, v are depthwise conv + BatchNorm projections of the map (k, v with
stride 2) followed by linear layers. There are no positional embeddings; the convolutions carry
position. As in the paper, a class token joins only the last stage and classifies
(``cls_token: false`` gives global average pooling instead). The attention logits are scaled by
1/sqrt(stage width), as in the reference implementation (the paper does not say).

Differences from vit-pytorch's ``CvT`` (which follows the paper less closely): vit-pytorch has no
class token and average-pools; here the paper's last-stage class token is the default.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.cvt_weights import HF_CVT

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.downsample import ConvEmbed
from vitzoo.components.hierarchical import (
    HierarchicalConfig,
    HierarchicalModel,
    build_stage_blocks,
    conv_out,
    map_to_tokens,
    tokens_to_map,
)
from vitzoo.config import NonNegativeInt, PositiveInt, SpecValueError


class CvtConfig(HierarchicalConfig):
    """CvT: conv token embedding per stage + conv-projection attention; class token in the last."""

    type: Literal["cvt"] = "cvt"
    dims: list[PositiveInt] = [64, 192, 384]
    depths: list[PositiveInt] = [1, 2, 10]
    num_heads: list[PositiveInt] = [1, 3, 6]
    patch_sizes: list[PositiveInt] = [7, 3, 3]
    patch_strides: list[PositiveInt] = [4, 2, 2]
    patch_padding: list[NonNegativeInt] = [2, 1, 1]
    cls_token: bool = True
    attention: ComponentSpec("attention") = component_default(type="conv-proj", scale_by="width")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm", norm_eps=1e-5)
    head_norm: Literal["layernorm", "batchnorm", "none"] = "layernorm"

    @model_validator(mode="after")
    def _rules(self) -> CvtConfig:
        kernels = dict(patch_sizes=self.patch_sizes, patch_strides=self.patch_strides)
        self.check_stages(lists=dict(**kernels, patch_padding=self.patch_padding), positive=kernels)
        grid = self.image_hw
        for i, (k, s, p) in enumerate(
            zip(self.patch_sizes, self.patch_strides, self.patch_padding, strict=True)
        ):
            grid = tuple(conv_out(g, k, s, p) for g in grid)
            if min(grid) < 1:
                raise SpecValueError(
                    "image_size",
                    f"{self.image_size} is too small: stage {i}'s token embedding leaves no "
                    f"tokens; allowed: at least {sum(self.patch_strides)} pixels",
                )
        self.check_children("attention", "mlp", "block", image_size=self.image_hw, class_token=True)
        return self


class CvtStage(nn.Module):
    """Conv token embedding (+ LayerNorm) -> [class token] -> blocks; state is (cls, map)."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        kernel: int,
        stride: int,
        padding: int,
        blocks: nn.ModuleList,
        cls_token: bool,
    ) -> None:
        super().__init__()
        self.embed = ConvEmbed(in_dim, dim, kernel, stride, padding, norm_eps=1e-5)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.blocks = blocks

    def forward(
        self, state: tuple[torch.Tensor | None, torch.Tensor]
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        fmap = self.embed(state[1])
        grid = fmap.shape[-2:]
        tokens = map_to_tokens(fmap)
        prefix = 0
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
            prefix = 1
        for block in self.blocks:
            tokens = block(tokens)
        cls = tokens[:, :prefix] if prefix else None
        return cls, tokens_to_map(tokens[:, prefix:], grid)


class ConvolutionalVisionTransformer(HierarchicalModel):
    """CvT (convolutional token embedding + convolutional projection attention)."""

    def __init__(self, config: CvtConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.stem = nn.Identity()
        self.uses_cls = config.cls_token
        self.num_prefix_tokens = int(config.cls_token)
        grid, in_dim, stages = config.image_hw, config.in_chans, []
        last = len(config.dims) - 1
        for i, dim in enumerate(config.dims):
            k, s, p = config.patch_sizes[i], config.patch_strides[i], config.patch_padding[i]
            grid = tuple(conv_out(g, k, s, p) for g in grid)
            with_cls = config.cls_token and i == last
            blocks = build_stage_blocks(ctx, config, i, grid, num_prefix_tokens=int(with_cls))
            stages.append(CvtStage(in_dim, dim, k, s, p, blocks, with_cls))
            in_dim = dim
        self.stages = nn.ModuleList(stages)
        self.init_tail(config, ctx, config.dims[-1])
        if config.cls_token:
            nn.init.trunc_normal_(self.stages[-1].cls_token, std=0.02)

    def run_stem(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, x

    def stage_map(self, state: tuple[torch.Tensor | None, torch.Tensor]) -> torch.Tensor:
        return state[1]

    def finish(self, state: tuple[torch.Tensor | None, torch.Tensor]) -> torch.Tensor:
        """Class-token models return [cls; patch tokens] (B, 1 + N, C); others the last map."""
        cls, fmap = state
        if cls is None:
            return fmap
        return torch.cat([cls, map_to_tokens(fmap)], dim=1)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, 0] if self.uses_cls else features.mean(dim=(-2, -1))


TINY: dict[str, Any] = {
    "image_size": 32,
    "dims": [16, 32],
    "depths": [1, 1],
    "num_heads": [1, 2],
    "patch_sizes": [7, 3],
    "patch_strides": [4, 2],
    "patch_padding": [2, 1],
    "num_classes": 10,
}


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "cvt",
        ConvolutionalVisionTransformer,
        CvtConfig,
        tags={"image", "feature-maps"},
        example=TINY,
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "cvt")


@hookimpl
def register_weight_converters(register: Any) -> None:
    register(HF_CVT)
