"""Built-in plugin: MobileViT (Mehta & Rastegari, ICLR 2022, arXiv:2110.02178).

MobileViT is a MobileNetV2 whose last three stages end in a **MobileViT block**: a 3x3 conv and a
1x1 projection (local representation), then "transformers as convolutions": the map is unfolded
into p x p patches and, for each of the p*p pixel positions, a transformer (the registered
pre-norm block with any registered attention / MLP) attends across all patches; the map is
folded back, projected to the input width and fused with the block input by a 3x3 conv.
Everything else is the shared inverted residual (:class:`vitzoo.components.conv.MBConv`, MV2
form). A final 1x1 conv widens the last map before global pooling and the linear classifier
(with bias, as in the reference ml-cvnets model; vit-pytorch drops the bias).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.mobilevit_timm_weights import TIMM_MOBILEVIT
from vitzoo_plugins.mobilevit_weights import HF_MOBILEVIT

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.conv import ConvNormAct, MBConv
from vitzoo.components.hierarchical import (
    HierarchicalConfig,
    HierarchicalModel,
    check_image_divisible,
    drop_path_schedule,
)
from vitzoo.config import NonNegativeInt, PositiveFloat, PositiveInt, SizeOrPair, SpecValueError


class MobileVitConfig(HierarchicalConfig):
    """MobileViT: MV2 inverted residuals + MobileViT blocks (unfold -> transformer -> fold)."""

    type: Literal["mobilevit"] = "mobilevit"
    image_size: SizeOrPair = 256
    stem_dim: PositiveInt = 16
    #: Output width and number of MV2 blocks of each stage (the first block carries the stride).
    channels: list[PositiveInt] = [16, 24, 48, 64, 80]
    mv2_blocks: list[PositiveInt] = [1, 3, 1, 1, 1]
    strides: list[PositiveInt] = [1, 2, 2, 2, 2]
    #: Transformer width / depth of the MobileViT block ending each stage (0: no block).
    transformer_dims: list[NonNegativeInt] = [0, 0, 64, 80, 96]
    transformer_depths: list[NonNegativeInt] = [0, 0, 2, 4, 3]
    expand_ratio: PositiveFloat = 2.0
    patch_size: PositiveInt = 2
    num_heads: PositiveInt = 4
    final_dim: PositiveInt = 320
    attention: ComponentSpec("attention") = component_default(type="mhsa")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=2.0, activation="silu")
    block: ComponentSpec("block") = component_default(type="pre-norm", norm_eps=1e-5)

    @model_validator(mode="after")
    def _rules(self) -> MobileVitConfig:
        self.check_stages(
            reference="channels",
            stages=("mv2_blocks", "strides"),
            lists=dict(
                transformer_dims=self.transformer_dims, transformer_depths=self.transformer_depths
            ),
            positive=dict(
                stem_dim=self.stem_dim,
                patch_size=self.patch_size,
                num_heads=self.num_heads,
                final_dim=self.final_dim,
            ),
            heads_divide=False,  # one num_heads for every stage
        )
        stride = 2
        for i, (d, n, s) in enumerate(
            zip(self.transformer_dims, self.transformer_depths, self.strides, strict=True)
        ):
            stride *= s
            if (d == 0) != (n == 0):
                raise SpecValueError(
                    f"transformer_dims.{i}",
                    "a stage has a MobileViT block only when both transformer_dims and "
                    "transformer_depths are positive; set both to 0 to leave it out",
                )
            if d and d % self.num_heads:
                raise SpecValueError(
                    f"transformer_dims.{i}",
                    f"{d} is not divisible by num_heads={self.num_heads}",
                )
            if d:
                check_image_divisible(
                    self.image_size,
                    stride * self.patch_size,
                    f"stage {i}'s map (image / {stride}) must tile into "
                    f"{self.patch_size}x{self.patch_size} patches",
                )
        self.check_children("attention", "mlp", "block", image_size=self.image_hw, class_token=True)
        return self


class MobileVitBlock(nn.Module):
    """Local 3x3 + 1x1 conv -> per-pixel-position transformer over patches -> fold -> fuse."""

    def __init__(
        self, channels: int, dim: int, patch: int, blocks: nn.ModuleList, norm_eps: float
    ) -> None:
        super().__init__()
        self.patch = patch
        self.local = ConvNormAct(channels, channels, 3, activation="silu")
        self.to_tokens = nn.Conv2d(channels, dim, 1, bias=False)
        self.blocks = blocks
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.from_tokens = ConvNormAct(dim, channels, 1, activation="silu")
        self.fuse = ConvNormAct(2 * channels, channels, 3, activation="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.to_tokens(self.local(x))
        b, d, h, w = y.shape
        p = self.patch
        # (B, d, H, W) -> (B * p*p, N patches, d): one sequence per pixel position in a patch.
        seq = y.reshape(b, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1)
        seq = seq.reshape(b * p * p, (h // p) * (w // p), d)
        for block in self.blocks:
            seq = block(seq)
        seq = self.norm(seq).reshape(b, p, p, h // p, w // p, d)
        y = seq.permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.fuse(torch.cat([x, self.from_tokens(y)], dim=1))


class MobileVit(HierarchicalModel):
    """MobileViT (MV2 + MobileViT blocks)."""

    def __init__(self, config: MobileVitConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.stem = ConvNormAct(config.in_chans, config.stem_dim, 3, 2, activation="silu")
        rates = drop_path_schedule(config.drop_path_rate, config.transformer_depths)
        stages, in_dim = [], config.stem_dim
        h, w = config.image_hw[0] // 2, config.image_hw[1] // 2
        for i, out in enumerate(config.channels):
            layers: list[nn.Module] = []
            for j in range(config.mv2_blocks[i]):
                stride = config.strides[i] if j == 0 else 1
                layers.append(
                    MBConv(
                        in_dim,
                        out,
                        stride=stride,
                        expand_ratio=config.expand_ratio,
                        activation="silu",
                    )
                )
                in_dim = out
            h, w = h // config.strides[i], w // config.strides[i]
            dim = config.transformer_dims[i]
            if dim:
                p = config.patch_size
                blocks = nn.ModuleList(
                    ctx.build(
                        "block",
                        config.block,
                        dim=dim,
                        num_heads=config.num_heads,
                        grid=(h // p, w // p),
                        num_prefix_tokens=0,
                        layer_index=sum(config.transformer_depths[:i]) + k,
                        drop_path=rate,
                        attention=config.attention,
                        mlp=config.mlp,
                    )
                    for k, rate in enumerate(rates[i])
                )
                norm_eps = getattr(config.block, "norm_eps", 1e-5)
                layers.append(MobileVitBlock(out, dim, p, blocks, norm_eps))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.expand = ConvNormAct(in_dim, config.final_dim, 1, activation="silu")
        self.init_tail(config, ctx, config.final_dim)

    def finish(self, fmap: torch.Tensor) -> torch.Tensor:
        """The last stage's map widened by the final 1x1 conv (what the classifier pools)."""
        return self.expand(fmap)


TINY: dict[str, Any] = {
    "image_size": 32,
    "stem_dim": 8,
    "channels": [8, 16, 24],
    "mv2_blocks": [1, 1, 1],
    "strides": [1, 2, 2],
    "transformer_dims": [0, 16, 24],
    "transformer_depths": [0, 1, 1],
    "num_heads": 2,
    "final_dim": 32,
    "num_classes": 10,
}


@hookimpl
def register_architectures(register: Any) -> None:
    register("mobilevit", MobileVit, MobileVitConfig, tags={"image", "feature-maps"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "mobilevit")


@hookimpl
def register_weight_converters(register: Any) -> None:
    register(HF_MOBILEVIT)
    register(TIMM_MOBILEVIT)
