"""Built-in plugin: Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030) and Swin V2
(Liu et al., CVPR 2022, arXiv:2111.09883). Reference code: github.com/microsoft/Swin-Transformer;
the ports in timm (``swin_transformer.py``, ``swin_transformer_v2.py``) and Hugging Face
(``Swin*``, ``Swinv2*``).

Swin is a four-stage pyramid of registered parts:

* the stem: a patch_size x patch_size stride-patch_size convolution + LayerNorm
  (:class:`~vitzoo.components.downsample.ConvEmbed`);
* between stages, :class:`~vitzoo.components.downsample.PatchMerging` (2x2 neighbours
  concatenated, LayerNorm, bias-free Linear to twice the width);
* blocks: the registered ``pre-norm`` block with the registered ``window`` attention (learned
  relative position table). Blocks alternate plain and shifted windows: every odd block rolls the
  map by half a window and masks the wrapped-around tokens apart. Where a stage's map is not
  larger than the window, the window shrinks to the map and the shift is dropped (timm: per axis;
  the Microsoft and Hugging Face code: both axes when the shorter side fits, ``window_clamp``);
  maps the windows do not tile are zero-padded, the padding taking part unmasked as in the
  reference code (``attention.pad_order`` says whether padding comes before or after the shift);
* the head: LayerNorm over the last map, global average, Linear.

**Swin V2** is the same pyramid with three registered options switched on (``swinv2``, a config
subclass with V2's defaults): scaled cosine attention with a learned, clamped per-head logit scale
and query / value biases only (``attention: {cosine: true, key_bias: false}``), the continuous
position bias MLP over log-spaced offsets (``position_bias: continuous``, with
``pretrained_window_sizes`` so a model fine-tuned at a larger window keeps the offsets it was
pre-trained on), residual post-norm blocks (``block.norm_position: res-post``) and patch merging
that normalises after the projection (``merge_norm: after``).

Stage layout: the reference code (Microsoft, Hugging Face, timm < 0.9) downsamples at the end of a
stage; vitzoo, like timm >= 0.9, at the start of the next, so a stage's features are the maps its
blocks produced (the converters move the tensors).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets
from vitzoo_plugins.swin_weights import CONVERTERS

from vitzoo import ComponentSpec, component_default, hookimpl
from vitzoo.components.context import BuildContext
from vitzoo.components.downsample import ConvEmbed, PatchMerging, merged_grid
from vitzoo.components.hierarchical import HierarchicalConfig, HierarchicalModel, build_token_stages
from vitzoo.components.windows import WindowAttentionConfig
from vitzoo.config import NonNegativeInt, PositiveFloat, PositiveInt, SpecValueError, check_child

#: Attention fields the architecture sets per block (left at their defaults in ``attention``); a
#: spec sets them through ``window_sizes`` / ``pretrained_window_sizes`` instead.
_PER_BLOCK_FIELDS = ("window_size", "shift_size", "pretrained_window_size")


class SwinConfig(HierarchicalConfig):
    """Swin: patch embedding, shifted-window attention stages joined by patch merging."""

    type: Literal["swin"] = "swin"
    patch_size: PositiveInt = 4
    dims: list[PositiveInt] = [96, 192, 384, 768]
    depths: list[PositiveInt] = [2, 2, 6, 2]
    num_heads: list[PositiveInt] = [3, 6, 12, 24]
    #: Window side per stage (clamped to a stage map that is not larger; see the module doc).
    window_sizes: list[PositiveInt] = [7, 7, 7, 7]
    #: How a window larger than a stage map is fitted: ``per-axis`` (timm: each axis clamped,
    #: shift dropped on that axis) or ``shortest-side`` (Microsoft / Hugging Face: when the
    #: shorter side fits in one window, the window becomes that side on both axes, no shift).
    window_clamp: Literal["per-axis", "shortest-side"] = "per-axis"
    #: Continuous position bias only: the window each stage was pre-trained with (0: the stage's
    #: own window); None: every stage's own window.
    pretrained_window_sizes: list[NonNegativeInt] | None = None
    #: Patch merging's LayerNorm before (Swin) or after (Swin V2) its projection.
    merge_norm: Literal["before", "after"] = "before"
    #: LayerNorm eps of the patch embedding, the patch merging and the final norm.
    norm_eps: PositiveFloat = 1e-5
    #: the table resampled as timm's Swin does (its aliases are timm's names); the Microsoft
    #: code's fine-tuning recipe is ``table_resampling: bicubic``
    attention: ComponentSpec("attention") = component_default(
        type="window", mask_padding=False, table_resampling="geometric"
    )
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm", norm_eps=1e-5)

    @model_validator(mode="after")
    def _rules(self) -> SwinConfig:
        lists: dict[str, Any] = {"window_sizes": self.window_sizes}
        if self.pretrained_window_sizes is not None:
            lists["pretrained_window_sizes"] = self.pretrained_window_sizes
        self.check_stages(
            lists=lists, positive=dict(window_sizes=self.window_sizes, patch_size=self.patch_size)
        )
        for axis, size in enumerate(self.image_hw):
            if size < self.patch_size:
                raise SpecValueError(
                    "image_size",
                    f"{size} (axis {axis}) is smaller than one {self.patch_size}px patch; "
                    f"allowed: at least {self.patch_size}",
                )
        self._check_attention()
        self.check_children("mlp", "block", image_size=self.image_hw)
        return self

    def _check_attention(self) -> None:
        attention = self.attention
        if not isinstance(attention, WindowAttentionConfig) or attention.mode != "block":
            raise SpecValueError(
                "attention.type",
                "Swin alternates plain and shifted windows; allowed: window (mode: block)",
            )
        defaults = WindowAttentionConfig.model_fields
        for field in _PER_BLOCK_FIELDS:
            # compared with the default, not "was it given": a dumped spec writes every field
            if getattr(attention, field) != defaults[field].default:
                raise SpecValueError(
                    f"attention.{field}",
                    "Swin sets each block's window, shift and pre-training window itself; set "
                    "window_sizes (and pretrained_window_sizes) instead",
                )
        if self.pretrained_window_sizes is not None and attention.position_bias != "continuous":
            raise SpecValueError(
                "pretrained_window_sizes",
                "needs the continuous position bias (attention.position_bias: continuous)",
            )
        check_child(attention, "attention")

    def stage_grids(self) -> list[tuple[int, int]]:
        """Each stage's token grid: the patch grid, then halved (rounding up) per merge."""
        h, w = (size // self.patch_size for size in self.image_hw)
        grids = [(h, w)]
        for _ in self.dims[1:]:
            h, w = merged_grid(h), merged_grid(w)
            grids.append((h, w))
        return grids

    def stage_window(self, stage: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(window, shift of the shifted blocks) of a stage, fitted to its grid."""
        grid, size = self.stage_grids()[stage], self.window_sizes[stage]
        if self.window_clamp == "shortest-side":
            if min(grid) <= size:
                return (min(grid), min(grid)), (0, 0)
            return (size, size), (size // 2, size // 2)
        window = (min(grid[0], size), min(grid[1], size))
        shift = (0 if grid[0] <= size else size // 2, 0 if grid[1] <= size else size // 2)
        return window, shift

    def block_attention(self, stage: int, index: int) -> WindowAttentionConfig:
        """Block ``index`` of ``stage``: the stage's window, shifted on odd blocks."""
        window, shift = self.stage_window(stage)
        update: dict[str, Any] = {"window_size": window, "shift_size": shift if index % 2 else 0}
        pretrained = (self.pretrained_window_sizes or [0] * len(self.dims))[stage]
        if pretrained:
            update["pretrained_window_size"] = pretrained
        return self.attention.model_copy(update=update)


class Swin(HierarchicalModel):
    """Swin Transformer (V1 or, by configuration, V2)."""

    def __init__(self, config: SwinConfig, ctx: BuildContext) -> None:
        super().__init__()
        dims, eps = config.dims, config.norm_eps
        patch = config.patch_size
        self.stem = ConvEmbed(config.in_chans, dims[0], patch, patch, padding=0, norm_eps=eps)
        merges = [
            PatchMerging(dims[i - 1], dims[i], norm_eps=eps, norm_position=config.merge_norm)
            for i in range(1, len(dims))
        ]
        self.stages = build_token_stages(
            ctx,
            config,
            [nn.Identity(), *merges],
            config.stage_grids(),
            attention=config.block_attention,
        )
        self.init_tail(config, ctx, dims[-1], map_norm_eps=eps)

    def no_weight_decay(self) -> set[str]:
        """Relative position tables / CPB MLPs (the base's rule) and Swin V2's logit scales,
        as the reference training code exempts them."""
        scales = {n for n, _ in self.named_parameters() if n.endswith("logit_scale")}
        return super().no_weight_decay() | scales


class SwinV2Config(SwinConfig):
    """Swin V2: scaled cosine attention, continuous position bias, residual post-norm."""

    type: Literal["swinv2"] = "swinv2"  # type: ignore[assignment]
    window_sizes: list[PositiveInt] = [8, 8, 8, 8]
    merge_norm: Literal["before", "after"] = "after"
    attention: ComponentSpec("attention") = component_default(
        type="window",
        mask_padding=False,
        cosine=True,
        key_bias=False,
        position_bias="continuous",
    )
    block: ComponentSpec("block") = component_default(
        type="pre-norm", norm_eps=1e-5, norm_position="res-post"
    )


TINY: dict[str, Any] = {
    "image_size": 36,
    "patch_size": 2,
    "dims": [16, 32],
    "depths": [2, 2],
    "num_heads": [2, 4],
    "window_sizes": [4, 4],
    "num_classes": 10,
}

#: A spec's ``attention`` replaces the default one whole, so V2's options are restated.
TINY_V2: dict[str, Any] = {
    **TINY,
    "pretrained_window_sizes": [2, 0],
    "attention": {
        "type": "window",
        "mask_padding": False,
        "cosine": True,
        "key_bias": False,
        "position_bias": "continuous",
        "cpb_hidden_dim": 32,
    },
}


@hookimpl
def register_architectures(register: Any) -> None:
    register("swin", Swin, SwinConfig, tags={"image", "feature-maps"}, example=TINY)
    register(
        "swinv2",
        Swin,
        SwinV2Config,
        tags={"image", "feature-maps"},
        example=TINY_V2,
        summary="Swin Transformer V2 (cosine attention, continuous position bias, post-norm).",
    )


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "swin")


@hookimpl
def register_weight_converters(register: Any) -> None:
    for converter in CONVERTERS:
        register(converter)
