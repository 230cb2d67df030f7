"""Built-in plugin: CaiT (Touvron et al., 2021, arXiv:2103.17239).

CaiT changes three things in a ViT, each registered here as a separate component so that any spec
can take one without the others:

* **LayerScale** -- already a block option (``block: {type: pre-norm, layer_scale: 1e-5}``);
* **talking-heads attention** (attention ``talking-heads``): learned head mixing of the logits
  before the softmax and of the weights after it;
* **class attention** (block ``class-attention``): the class token enters late and, in the last
  ``cls_depth`` blocks, only it is updated by attending to [cls, patches]; patch tokens pass
  through untouched. The maths is the shared :mod:`vitzoo.components.class_attention` (XCiT and
  CrossViT use it too); this plugin registers it as a block.

The ``cait`` architecture is the ViT base with these defaults: the self-attention stage runs on
patch tokens only (learned positions for patches only), then the class token is prepended for
the class-attention stage.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentConfig, ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.class_attention import ClassAttentionBlock
from vitzoo.components.context import BuildContext
from vitzoo.components.examples import TINY_VIT
from vitzoo.components.head_mixing import HeadMix
from vitzoo.components.layers import init_vit_weights
from vitzoo.components.model import run_block
from vitzoo.components.vit import VisionTransformer, VitConfig

TINY = TINY_VIT | {"cls_depth": 1}


# -- talking-heads attention --------------------------------------------------------------------
class TalkingHeadsConfig(MhsaConfig):
    """Talking-heads attention (Shazeer et al., 2020): heads mix before and after the softmax."""

    type: Literal["talking-heads"] = "talking-heads"


class TalkingHeadsAttention(MultiHeadAttention):
    """MHSA with a learned heads x heads map on the logits and another on the softmax weights."""

    needs_matrix = True

    def __init__(self, dim: int, num_heads: int, config: TalkingHeadsConfig) -> None:
        super().__init__(dim, num_heads, config)
        self.mix_logits = HeadMix(self.num_heads)
        self.mix_weights = HeadMix(self.num_heads)

    def transform_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self.mix_logits(logits)

    def transform_weights(self, weights: torch.Tensor) -> torch.Tensor:
        return self.mix_weights(weights)


def build_talking_heads(config: TalkingHeadsConfig, ctx: BuildContext) -> TalkingHeadsAttention:
    """Talking-heads attention (CaiT)."""
    return TalkingHeadsAttention(ctx.dim, ctx.num_heads, config)


# -- class attention ----------------------------------------------------------------------------
class ClassAttentionBlockConfig(ComponentConfig):
    """CaiT class-attention block: cls += CA(norm([cls, patches])); cls += MLP(norm(cls)).

    Patch tokens are returned unchanged. Needs a class token in front of the sequence.
    """

    type: Literal["class-attention"] = "class-attention"
    attention: MhsaConfig = MhsaConfig()
    layer_scale: float | None = None
    norm_eps: float = 1e-6

    def check(self, class_token: bool = True, **_: Any) -> None:
        if not class_token:
            raise SpecValueError(
                "type", "the class-attention block needs a class token; set class_token: true"
            )


def build_class_attention_block(
    config: ClassAttentionBlockConfig, ctx: BuildContext
) -> ClassAttentionBlock:
    """CaiT class-attention block."""
    return ClassAttentionBlock(ctx, config.attention, config.layer_scale, config.norm_eps)


# -- the CaiT architecture ----------------------------------------------------------------------
class CaitConfig(VitConfig):
    """CaiT: LayerScale + talking heads on patch tokens, then ``cls_depth`` class-attention blocks."""

    type: Literal["cait"] = "cait"
    cls_depth: int = 2
    attention: ComponentSpec("attention") = component_default(type="talking-heads")
    block: ComponentSpec("block") = component_default(type="pre-norm", layer_scale=1e-5)
    class_block: ComponentSpec("block") = component_default(
        type="class-attention", layer_scale=1e-5
    )

    @model_validator(mode="after")
    def _cait_rules(self) -> CaitConfig:
        if not self.class_token:
            raise SpecValueError(
                "class_token", "CaiT's class-attention stage needs class_token: true"
            )
        if self.distillation_token:
            raise SpecValueError("distillation_token", "not supported by cait; allowed: false")
        if self.cls_depth < 1:
            raise SpecValueError("cls_depth", f"must be a positive integer, got {self.cls_depth}")
        return self

    def class_drop_path_rates(self) -> list[float]:
        """Stochastic depth of the class-attention blocks (CaiT here: ``drop_path_rate`` each)."""
        return [self.drop_path_rate] * self.cls_depth


class Cait(VisionTransformer):
    """The ViT base on patch tokens only, followed by a late-class-token stage.

    Also the model of XCiT (the ``xcit`` plugin subclasses config and model): the structure is
    the same, only the registered parts differ.

    ``encode`` runs both stages and returns [cls, (registers), patches] normalised, so the output
    carries ``num_prefix_tokens`` prefix tokens like every other flat-token model.
    """

    def __init__(self, config: CaitConfig, ctx: BuildContext) -> None:
        super().__init__(config.model_copy(update={"class_token": False}), ctx)
        self.config = config
        dim = config.dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.num_prefix_tokens += 1
        grid = self.patch.grid_for(self.input_size[1:])
        rates = config.class_drop_path_rates()
        base = ctx.replace(dim=dim, num_heads=config.num_heads, in_chans=config.in_chans)
        self.class_blocks = nn.ModuleList(
            base.build(
                "block",
                config.class_block,
                grid=grid,
                num_prefix_tokens=self.num_prefix_tokens,
                layer_index=config.depth + i,
                depth=config.depth + config.cls_depth,
                drop_path=rates[i],
                attention=config.attention,
                mlp=config.mlp,
            )
            for i in range(config.cls_depth)
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
                raise ValueError("cait supports key-padding masks (B, N) only")
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

    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stages = [*self.blocks, *self.class_blocks]
        wanted = set(range(len(stages)) if indices is None else [i % len(stages) for i in indices])
        tokens, _ = self.embed(x)
        outputs = []
        for i, block in enumerate(stages):
            if i == len(self.blocks):
                tokens, _ = self._class_stage_input(tokens, None)
            tokens = block(tokens)
            if i in wanted:
                outputs.append(tokens)
        return self.norm(tokens), outputs


def build_cait(config: CaitConfig, ctx: BuildContext) -> Cait:
    """CaiT: class-attention image transformer."""
    return Cait(config, ctx)


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "talking-heads",
        build_talking_heads,
        TalkingHeadsConfig,
        tags={"mask", "needs-matrix"},
        example={"config": {}, "model": {}},
    )


@hookimpl
def register_blocks(register: Any) -> None:
    register(
        "class-attention",
        build_class_attention_block,
        ClassAttentionBlockConfig,
        tags={"mask"},
        summary="CaiT class-attention block: only the class token is updated",
        example={"config": {"layer_scale": 1e-5}, "model": {}},
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("cait", build_cait, CaitConfig, tags={"image", "tokens", "mask"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "cait")
