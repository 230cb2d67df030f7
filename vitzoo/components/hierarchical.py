"""The shared base of staged (hierarchical) backbones: stem -> stages -> pool -> norm -> head.

PiT, LeViT, CvT, Twins, MaxViT, MobileViT, CrossFormer, NesT ... are not one flat token sequence:
they run a stem and then stages that change resolution and width. What they share is the model
protocol around those stages, which lives here once:

* ``forward_features(x)`` -> the features the head consumes (the last stage's (B, C, H, W) map,
  or for class-token models such as PiT the final token sequence);
* the feature layers of the backbone API (``forward_intermediates``, ``feature_info``,
  ``prune_intermediate_layers``; written once on :class:`~vitzoo.components.model.VitzooModel`)
  are the stages, each giving its (B, C, H, W) map;
* ``forward_head`` = pool (global average by default) + norm + optional pre-logits + head, where
  the head is any registered head (a distillation head gets the pooled vector twice);
* ``reset_classifier``, ``input_size`` (architectures built on it declare the ``feature-maps``
  capability at registration).

A subclass builds ``self.stem`` and ``self.stages`` (an ``nn.ModuleList``, usually of
:class:`TokenStage` with blocks from :func:`build_stage_blocks`) and ends with
:meth:`HierarchicalModel.init_tail` (final map norm, head, ViT weight init). Stages that carry
more than a map between them (PiT's class token) override :meth:`stage_map` / :meth:`run_stem` /
:meth:`run_stage`.

:class:`HierarchicalConfig` holds the fields every staged architecture has and the spec-time
helpers (:meth:`HierarchicalConfig.check_stages` with :func:`check_stage_lists`,
:func:`check_positive`, :func:`check_heads_divide`, :func:`check_multiples_of`, and
:func:`check_image_divisible`) that turn "depth tuple of the wrong length" or "image not
divisible by window x stride" into a ``SpecValueError`` naming the field, never a shape error in
forward. Every staged plugin validates its stage lists through them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitzoo.components.block import block_stack
from vitzoo.components.context import BuildContext
from vitzoo.components.conv import PEG
from vitzoo.components.layers import drop_path_rates, init_vit_weights, to_pair
from vitzoo.components.model import VitzooModel
from vitzoo.config import (
    ComponentConfig,
    ComponentSpec,
    NonNegativeInt,
    PositiveInt,
    Rate,
    SizeOrPair,
    SpecValueError,
    check_child,
    check_positive,  # staged plugins import it from here, beside the other stage checks
    component_default,
)


class HierarchicalConfig(ComponentConfig):
    """Fields every staged architecture has (subclasses add ``type`` and their stage lists)."""

    image_size: SizeOrPair = 224
    in_chans: PositiveInt = 3
    num_classes: NonNegativeInt = 1000
    drop_path_rate: Rate = 0.0
    head: ComponentSpec("head") = component_default(type="linear")
    #: Norm applied to the pooled vector before the head.
    head_norm: Literal["layernorm", "batchnorm", "none"] = "none"
    #: Width of a Linear + Tanh "pre-logits" layer before the classifier (MaxViT); None: none.
    head_hidden_dim: PositiveInt | None = None

    def check_common(self, *, distillation: bool = False) -> None:
        """Rules shared by every staged architecture (call from the subclass validator)."""
        check_positive(in_chans=self.in_chans)
        if self.num_classes < 0:
            raise SpecValueError("num_classes", "must be >= 0 (0 gives features, no classifier)")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise SpecValueError("drop_path_rate", f"must be in [0, 1), got {self.drop_path_rate}")
        for axis, size in enumerate(to_pair(self.image_size)):
            if size < 1:
                raise SpecValueError("image_size", f"must be positive (axis {axis}), got {size}")
        check_child(self.head, "head", distillation_token=distillation, class_token=True)

    @property
    def image_hw(self) -> tuple[int, int]:
        return to_pair(self.image_size)  # type: ignore[return-value]

    def check_stages(
        self,
        *,
        reference: str = "dims",
        stages: Sequence[str] = ("depths", "num_heads"),
        lists: dict[str, Sequence[Any]] | None = None,
        positive: dict[str, Sequence[int] | int] | None = None,
        heads_divide: bool = True,
        distillation: bool = False,
    ) -> None:
        """The common rules plus the per-stage list rules, in one call for every staged model.

        ``reference`` (default ``dims``) is the list that defines the number of stages;
        ``stages``: the fields that are per-stage lists of positive integers (default ``depths``
        and ``num_heads``). ``lists``: further per-stage lists that must match ``reference`` in
        length; ``positive``: further fields that must be positive integers. ``heads_divide``:
        ``num_heads`` must divide ``dims`` stage by stage. ``distillation``: the model has a
        distillation token. Every error names the field (``depths``, ``num_heads.2``, ...).
        """
        self.check_common(distillation=distillation)
        ref = getattr(self, reference)
        stages = {name: getattr(self, name) for name in stages}
        check_stage_lists(len(ref), reference, **stages, **(lists or {}))
        check_positive(**{reference: ref}, **stages, **(positive or {}))
        if heads_divide:
            check_heads_divide(self.dims, self.num_heads)

    def check_children(self, *names: str, **context: Any) -> None:
        """``check_child`` every named component field with the same context."""
        for name in names:
            check_child(getattr(self, name), name, **context)


def check_stage_lists(num_stages: int, reference: str, **lists: Sequence[Any]) -> None:
    """Every per-stage list must have ``num_stages`` entries (the length of ``reference``)."""
    for name, values in lists.items():
        if len(values) != num_stages:
            raise SpecValueError(
                name,
                f"has {len(values)} entries but {reference} defines {num_stages} stages; "
                f"give exactly one value per stage",
            )


def check_image_divisible(
    image_size: Any, divisor: int, why: str, field: str = "image_size"
) -> None:
    """Spec-time check that the image tiles into ``divisor``-sized cells on both axes."""
    for axis, size in enumerate(to_pair(image_size)):
        if size % divisor:
            low = max(divisor, size // divisor * divisor)
            raise SpecValueError(
                field,
                f"{size} (axis {axis}) is not divisible by {divisor} ({why}); "
                f"allowed: multiples of {divisor}, e.g. {low} or {low + divisor}",
            )


def check_heads_divide(dims: Sequence[int], heads: Sequence[int], field: str = "num_heads") -> None:
    for i, (dim, h) in enumerate(zip(dims, heads, strict=True)):
        if h < 1 or dim % h:
            allowed = [d for d in range(1, min(dim, 64) + 1) if dim % d == 0]
            raise SpecValueError(
                f"{field}.{i}", f"{h} heads do not divide stage width {dim}; allowed: {allowed}"
            )


def check_multiples_of(
    field: str, values: Sequence[int], divisor: int, divisor_name: str, why: str
) -> None:
    """Each stage's ``values[i]`` must be a multiple of ``divisor`` (a width split into heads of
    a fixed size, ...); the error names ``field.i``, the divisor and why it must divide."""
    for i, value in enumerate(values):
        if value % divisor:
            raise SpecValueError(
                f"{field}.{i}",
                f"{value} is not a multiple of {divisor_name}={divisor} ({why}); "
                f"allowed: multiples of {divisor}",
            )


def drop_path_schedule(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic depth rising linearly over all blocks (:func:`drop_path_rates`), split per stage."""
    rates = drop_path_rates(rate, sum(depths))
    out, start = [], 0
    for d in depths:
        out.append(rates[start : start + d])
        start += d
    return out


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution (used to know stage grids without running the model)."""
    return (size + 2 * padding - kernel) // stride + 1


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def tokens_to_map(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, *grid)


_NORMS = {
    "layernorm": lambda d: nn.LayerNorm(d),
    "batchnorm": lambda d: nn.BatchNorm1d(d),
    "none": lambda d: nn.Identity(),
}


class HierarchicalModel(VitzooModel):
    """Model protocol for staged backbones (see the module docstring)."""

    def init_tail(
        self,
        config: HierarchicalConfig,
        ctx: BuildContext,
        num_features: int,
        *,
        norm: nn.Module | None = None,
        map_norm_eps: float | None = None,
    ) -> None:
        """The end of a staged constructor: the final ``norm`` that :meth:`finish` applies (a
        given module, or with ``map_norm_eps`` a LayerNorm over the channels of the last map),
        the head (:meth:`init_head`), then the ViT weight init over the whole model."""
        if map_norm_eps is not None:
            norm = ChannelLayerNorm(num_features, eps=map_norm_eps)
        if norm is not None:
            self.norm = norm
        self.init_head(config, ctx, num_features)
        self.apply(init_vit_weights)

    def init_head(self, config: HierarchicalConfig, ctx: BuildContext, num_features: int) -> None:
        """Build pooling norm, pre-logits and the registered head; set the protocol attributes.

        A model without a final ``norm`` gets an identity one, so :meth:`finish` needs no case.
        """
        if "norm" not in self._modules:
            self.norm = nn.Identity()
        self.config = config
        self.input_size = (config.in_chans, *config.image_hw)
        self.num_features = num_features
        self.num_classes = config.num_classes
        self.head_norm = _NORMS[config.head_norm](num_features)
        hidden = config.head_hidden_dim
        self.pre_logits = (
            nn.Sequential(nn.Linear(num_features, hidden), nn.Tanh()) if hidden else nn.Identity()
        )
        width = hidden or num_features
        self._head_ctx = ctx.replace(num_features=width, dim=width)
        self._paired_head = "distillation" in ctx.registry.get("head", config.head.type).tags
        self.head = self._head_ctx.build("head", config.head, num_classes=config.num_classes)

    # -- hooks a subclass may override ------------------------------------------------------
    def run_stem(self, x: torch.Tensor) -> Any:
        return self.stem(x)

    def run_stage(self, index: int, state: Any) -> Any:
        return self.stages[index](state)

    def stage_map(self, state: Any) -> torch.Tensor:
        """The (B, C, H, W) map of a stage's output state."""
        return state

    def finish(self, state: Any) -> torch.Tensor:
        """Final state -> the features ``forward_head`` consumes (default: the last map, normed)."""
        return self.norm(self.stage_map(state))

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> (B, C): global average over the map."""
        return features.mean(dim=(-2, -1))

    def run_stage_maybe_checkpointed(self, index: int, state: Any) -> Any:
        """``run_stage``, recomputed in backward (whole stage at a time) when checkpointing is on.

        Stages differ in what they carry (a map, tokens + grid, regional + local tokens), so the
        stage call is the one place every staged model can be checkpointed without knowing it.
        """
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self.run_stage, index, state, use_reentrant=False)
        return self.run_stage(index, state)

    # -- the model protocol -----------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        state = self.run_stem(x)
        for i in range(len(self.stages)):
            state = self.run_stage_maybe_checkpointed(i, state)
        return self.finish(state)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> Any:
        pooled = self.pre_logits(self.head_norm(self.pool(features)))
        if pre_logits:  # (B, D): a pooled (class, distillation) pair is averaged, as in ViT
            return pooled if pooled.ndim == 2 else pooled.mean(dim=1)
        if self._paired_head and pooled.ndim == 2:
            # One pooled vector feeds both classifiers; a model with its own distillation token
            # (PiT) pools the (B, 2, D) pair itself.
            pooled = pooled.unsqueeze(1).expand(-1, 2, -1)
        return self.head(pooled)

    # -- structure for the backbone API (VitzooModel.forward_intermediates & co.) ------------
    #: timm's name of the one pooling ``forward_head`` does ("avg"; "token" for class tokens).
    global_pool_name: str = "avg"

    def global_pool_choices(self) -> list[str]:
        return [self.global_pool_name]

    def feature_layer_names(self) -> list[str]:
        return [f"stages.{i}" for i in range(len(self.stages))]

    def intermediate_stem(self, x: torch.Tensor) -> Any:
        return self.run_stem(x)

    def intermediate_layer(self, index: int, state: Any) -> Any:
        return self.run_stage_maybe_checkpointed(index, state)

    def intermediate_map(self, index: int, state: Any, norm: bool) -> torch.Tensor:
        """The stage map; with ``norm`` the last stage's map goes through the final norm.

        "Where it fits": a ``finish`` that is more than a norm (MobileViT's channel expansion,
        RegionViT's regional tokens) changes the map's shape, and then the map is left as is.
        """
        fmap = self.stage_map(state)
        is_last = index == len(self.stages) - 1 and not self.__dict__.get("_truncated", False)
        if not (norm and is_last):
            return fmap
        final = self.finish(state)
        if final.ndim == 3:  # a token sequence (PiT, CvT): drop the prefix, back onto the map
            if final.shape[1] - self.num_prefix_tokens != fmap.shape[-2] * fmap.shape[-1]:
                return fmap
            final = tokens_to_map(final[:, self.num_prefix_tokens :], fmap.shape[-2:])
        return final if final.shape == fmap.shape else fmap

    def intermediate_final(self, state: Any) -> torch.Tensor:
        return self.finish(state)

    def truncate_feature_layers(self, keep: int) -> None:
        self.stages = self.stages[:keep]
        self.__dict__["_truncated"] = True

    def no_weight_decay(self) -> set[str]:
        keys = ("cls_token", "pos_embed", "relative_position", "attention_biases")
        return {n for n, _ in self.named_parameters() if any(k in n for k in keys)}


class TokenStage(nn.Module):
    """One stage of token blocks over a map: downsample -> [PEG] -> blocks -> map.

    ``downsample`` maps (B, C, H, W) to the stage's (B, C', H', W') (a patch embedding, a
    strided conv, a patch merge, or ``nn.Identity``); the blocks run on the flattened
    (B, H'*W', C') tokens and read the grid from their build context. ``peg`` (a
    :class:`~vitzoo.components.conv.PEG`-like map -> map module) is applied before block
    ``peg_index`` (``0``: before the first block as in SepViT; ``1``: after the first block as in
    Twins / ScalableViT; ``len(blocks)``: after the last).
    """

    def __init__(
        self,
        downsample: nn.Module,
        blocks: Sequence[nn.Module],
        *,
        peg: nn.Module | None = None,
        peg_index: int = 0,
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.peg = peg
        self.peg_index = peg_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        grid = x.shape[2:]
        tokens = map_to_tokens(x)
        for i, block in enumerate(self.blocks):
            if self.peg is not None and i == self.peg_index:
                tokens = map_to_tokens(self.peg(tokens_to_map(tokens, grid)))
            tokens = block(tokens)
        if self.peg is not None and self.peg_index >= len(self.blocks):
            tokens = map_to_tokens(self.peg(tokens_to_map(tokens, grid)))
        return tokens_to_map(tokens, grid)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (each position normalised alone)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def build_stage_blocks(
    ctx: BuildContext,
    config: HierarchicalConfig,
    stage: int,
    grid: Sequence[int],
    *,
    attention: Any | Callable[[int], Any] | None = None,
    num_prefix_tokens: int = 0,
    mlp: Any | None = None,
) -> nn.ModuleList:
    """Stage ``stage``'s registered blocks, laid out by a staged ``config``.

    Reads the config's per-stage ``dims`` / ``num_heads`` / ``depths``, its ``drop_path_rate``
    and its ``block`` / ``mlp`` specs. ``attention`` is one spec (default: ``config.attention``)
    or a function of the block's index in the stage giving its spec (alternating attentions).
    Blocks are numbered over the whole model (``layer_index`` / ``depth``) and take their share of
    the linear stochastic-depth schedule. The stage grid and prefix count go into the context, so
    grid-aware attentions (window, spatial-reduction, conv-proj, ...) see the stage's resolution.
    ``mlp`` replaces ``config.mlp`` for this stage (per-stage MLP ratios, Twins-PCPVT).
    """
    depths = config.depths
    spec = config.attention if attention is None else attention
    rates = drop_path_schedule(config.drop_path_rate, depths)[stage]
    return block_stack(
        ctx.replace(dim=config.dims[stage], num_heads=config.num_heads[stage]),
        config.block,
        rates,
        grid=tuple(grid),
        num_prefix_tokens=num_prefix_tokens,
        attention=spec,
        mlp=config.mlp if mlp is None else mlp,
        first_layer=sum(depths[:stage]),
    )


def build_token_stages(
    ctx: BuildContext,
    config: HierarchicalConfig,
    downsamples: Sequence[nn.Module],
    grids: Sequence[Sequence[int]],
    *,
    attention: Callable[[int, int], Any] | None = None,
    peg_kernel_size: int | None = None,
    mlp: Callable[[int], Any] | None = None,
) -> nn.ModuleList:
    """One :class:`TokenStage` per stage: ``downsamples[i]`` -> blocks (:func:`build_stage_blocks`)
    on ``grids[i]``, with a :class:`~vitzoo.components.conv.PEG` after the first block when
    ``peg_kernel_size`` is given (Twins, ScalableViT, SepViT). ``attention(stage, index)`` picks
    a block's attention spec (default: ``config.attention`` everywhere); ``mlp(stage)`` a stage's
    MLP spec (default: ``config.mlp`` everywhere)."""
    stages = []
    for i, (downsample, grid) in enumerate(zip(downsamples, grids, strict=True)):
        spec = None if attention is None else partial(attention, i)
        stage_mlp = None if mlp is None else mlp(i)
        blocks = build_stage_blocks(ctx, config, i, grid, attention=spec, mlp=stage_mlp)
        peg = None if peg_kernel_size is None else PEG(config.dims[i], peg_kernel_size)
        stages.append(TokenStage(downsample, blocks, peg=peg, peg_index=1))
    return nn.ModuleList(stages)
