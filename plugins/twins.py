"""Built-in plugin: Twins-SVT and Twins-PCPVT (Chu et al., NeurIPS 2021, arXiv:2104.13840).

Twins-SVT is a four-stage pyramid whose blocks alternate two attentions, both registered core
components: **locally-grouped self-attention** (LSA, the ``window`` attention without relative
bias: full attention inside non-overlapping windows; where the windows do not tile the map, the
zero padding takes part unmasked, as in the reference code) and **global sub-sampled attention** (GSA,
the ``spatial-reduction`` attention: every token attends to a map shrunk by a strided conv).
Each stage starts with a non-overlapping patch-merging conv + LayerNorm, and a **PEG**
(positional encoding generator, a depthwise conv added residually) follows the first block of each
stage instead of positional embeddings. The head normalises the last tokens, averages, and
classifies.

**Twins-PCPVT** is the same pyramid in ``mode: pcpvt``: PVT's stages, where *every* block uses
global sub-sampled (spatial-reduction) attention, with the PEG as conditional position encoding
and per-stage MLP ratios (8/8/4/4). It is composed from the same registered parts, so it is a
mode of this architecture, registered a second time as ``twins-pcpvt`` with PCPVT's defaults.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.twins_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.downsample import ConvEmbed
from vitzoo.components.hierarchical import (
    HierarchicalConfig,
    HierarchicalModel,
    build_token_stages,
    check_image_divisible,
)
from vitzoo.components.spatial_attention import SpatialReductionConfig
from vitzoo.components.windows import WindowAttentionConfig
from vitzoo.config import PositiveFloat, PositiveInt, SpecValueError


class TwinsSvtConfig(HierarchicalConfig):
    """Twins-SVT: alternating locally-grouped (window) and global sub-sampled attention + PEG."""

    type: Literal["twins-svt"] = "twins-svt"
    dims: list[PositiveInt] = [64, 128, 256, 512]
    depths: list[PositiveInt] = [2, 2, 10, 4]
    num_heads: list[PositiveInt] = [2, 4, 8, 16]
    patch_sizes: list[PositiveInt] = [4, 2, 2, 2]
    #: LSA window per stage and GSA reduction ratio per stage.
    windows: list[PositiveInt] = [7, 7, 7, 7]
    sr_ratios: list[PositiveInt] = [8, 4, 2, 1]
    peg_kernel_size: PositiveInt = 3
    #: ``svt``: LSA and GSA blocks alternate; ``pcpvt``: every block is GSA (``windows`` unused).
    mode: Literal["svt", "pcpvt"] = "svt"
    #: Per-stage MLP ratio overriding ``mlp.ratio`` (PCPVT: 8, 8, 4, 4); None: ``mlp`` everywhere.
    mlp_ratios: list[PositiveFloat] | None = None
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm", norm_eps=1e-6)

    @model_validator(mode="after")
    def _rules(self) -> TwinsSvtConfig:
        per_stage = dict(patch_sizes=self.patch_sizes, sr_ratios=self.sr_ratios)
        if self.mode == "svt":
            per_stage["windows"] = self.windows
        lists: dict[str, Any] = dict(per_stage)
        if self.mlp_ratios is not None:
            lists["mlp_ratios"] = self.mlp_ratios
            if "ratio" not in type(self.mlp).model_fields:
                raise SpecValueError(
                    "mlp_ratios", f"needs an mlp with a 'ratio' field; {self.mlp.type!r} has none"
                )
            for i, r in enumerate(self.mlp_ratios):
                if not r > 0:
                    raise SpecValueError(("mlp_ratios", i), f"must be positive, got {r}")
        self.check_stages(lists=lists, positive=per_stage)
        stride = math.prod(self.patch_sizes)
        check_image_divisible(
            self.image_size, stride, f"the total patch stride of the {len(self.dims)} stages"
        )
        for i, (size, r) in enumerate(zip(self.stage_sizes(), self.sr_ratios, strict=True)):
            if min(size) % r:
                check_image_divisible(
                    self.image_size,
                    stride * r,
                    f"GSA reduction ratio {r} must divide stage {i}'s map {size}",
                )
        self.check_children("mlp", "block", image_size=self.image_hw)
        return self

    def block_attention(self, stage: int, index: int) -> Any:
        """SVT: LSA (window attention) on even blocks, GSA (spatial reduction) on odd blocks;
        PCPVT: GSA everywhere."""
        if self.mode == "svt" and index % 2 == 0:
            return WindowAttentionConfig(
                window_size=self.windows[stage], relative_bias=False, mask_padding=False
            )
        return SpatialReductionConfig(ratio=self.sr_ratios[stage])

    def stage_mlp(self, stage: int) -> Any:
        """The stage's MLP spec: ``mlp`` with the stage's ratio when ``mlp_ratios`` is set."""
        if self.mlp_ratios is None:
            return self.mlp
        return self.mlp.model_copy(update={"ratio": float(self.mlp_ratios[stage])})

    def stage_sizes(self) -> list[tuple[int, int]]:
        sizes, (h, w) = [], self.image_hw
        for p in self.patch_sizes:
            h, w = h // p, w // p
            sizes.append((h, w))
        return sizes


class TwinsSvt(HierarchicalModel):
    """Twins-SVT (locally-grouped + global sub-sampled attention, PEG)."""

    def __init__(self, config: TwinsSvtConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.stem = nn.Identity()
        widths = [config.in_chans, *config.dims]
        embeds = [
            ConvEmbed(widths[i], dim, patch, patch, padding=0, norm_eps=1e-5)
            for i, (dim, patch) in enumerate(zip(config.dims, config.patch_sizes, strict=True))
        ]
        self.stages = build_token_stages(
            ctx,
            config,
            embeds,
            config.stage_sizes(),
            attention=config.block_attention,
            peg_kernel_size=config.peg_kernel_size,  # after the first block of each stage
            mlp=config.stage_mlp,
        )
        self.init_tail(config, ctx, config.dims[-1], map_norm_eps=1e-6)


class TwinsPcpvtConfig(TwinsSvtConfig):
    """Twins-PCPVT: PVT stages of global sub-sampled attention + PEG (defaults: PCPVT-S)."""

    type: Literal["twins-pcpvt"] = "twins-pcpvt"  # type: ignore[assignment]
    mode: Literal["svt", "pcpvt"] = "pcpvt"
    dims: list[PositiveInt] = [64, 128, 320, 512]
    depths: list[PositiveInt] = [3, 4, 6, 3]
    num_heads: list[PositiveInt] = [1, 2, 5, 8]
    mlp_ratios: list[PositiveFloat] | None = [8.0, 8.0, 4.0, 4.0]


TINY: dict[str, Any] = {
    "image_size": 32,
    "dims": [16, 32],
    "depths": [2, 2],
    "num_heads": [1, 2],
    "patch_sizes": [4, 2],
    "windows": [4, 2],
    "sr_ratios": [2, 1],
    "num_classes": 10,
}


TINY_PCPVT: dict[str, Any] = {**TINY, "mlp_ratios": [2.0, 1.0]}


@hookimpl
def register_architectures(register: Any) -> None:
    register("twins-svt", TwinsSvt, TwinsSvtConfig, tags={"image", "feature-maps"}, example=TINY)
    # the same model class: PCPVT is a configuration of it, so it names its own summary
    register(
        "twins-pcpvt",
        TwinsSvt,
        TwinsPcpvtConfig,
        tags={"image", "feature-maps"},
        example=TINY_PCPVT,
        summary="Twins-PCPVT (PVT with conditional position encoding).",
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "twins")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
