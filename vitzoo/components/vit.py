"""The ViT base: patchifier -> prefix tokens + positions -> blocks -> norm -> pooling -> head.

Every part is a registered component named in :class:`VitConfig`, so a variant that is "a ViT
with different parts" is a spec (or a config subclass with other defaults), not new code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn

from vitzoo.components.block import block_stack
from vitzoo.components.context import BuildContext
from vitzoo.components.grid import grid_followers
from vitzoo.components.layers import drop_path_rates, init_vit_weights, to_pair
from vitzoo.components.model import VitzooModel, run_block
from vitzoo.components.norms import NormKind, make_norm
from vitzoo.components.pooling import pooled_width
from vitzoo.config import (
    ComponentConfig,
    ComponentSpec,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Rate,
    SizeOrPair,
    SpecValueError,
    check_child,
    check_positive,
    component_default,
)


class VitConfig(ComponentConfig):
    """Vision Transformer (Dosovitskiy et al., 2021) assembled from registered parts."""

    type: Literal["vit"] = "vit"
    image_size: SizeOrPair = 224
    in_chans: PositiveInt = 3
    num_classes: NonNegativeInt = 1000
    dim: PositiveInt = 768
    depth: PositiveInt = 12
    num_heads: PositiveInt = 12
    patch: ComponentSpec("patchifier") = component_default(type="linear", patch_size=16)
    posenc: ComponentSpec("posenc") = component_default(type="learned")
    attention: ComponentSpec("attention") = component_default(type="mhsa")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm")
    pool: ComponentSpec("pooling") = component_default(type="cls")
    head: ComponentSpec("head") = component_default(type="linear")
    #: A norm of the pooled vector, before the head (timm's ``fc_norm``): BEiT, EVA and MAE
    #: fine-tunes average the patch tokens and normalise the average instead of the tokens
    #: (with ``final_norm: false``). Same kind and eps as the final norm (``norm``, ``norm_eps``).
    fc_norm: bool = False
    class_token: bool = True
    distillation_token: bool = False
    register_tokens: NonNegativeInt = 0
    #: A norm (``norm`` kind, ``norm_eps``) over every token after the patch embedding, prefix
    #: tokens and positions, before the first block: CLIP's ``ln_pre`` (timm's ``norm_pre``).
    norm_pre: bool = False
    emb_dropout: Rate = 0.0
    drop_path_rate: Rate = 0.0
    patch_dropout: Rate = 0.0
    final_norm: bool = True
    norm_eps: PositiveFloat = 1e-6
    #: The final norm: LayerNorm (ViT) or RMSNorm (set the block's ``norm`` too for RMSNorm throughout).
    norm: NormKind = "layernorm"
    #: Accept any input size the patchifier divides, per call: positions are resampled to the
    #: input's grid and grid-aware parts (window / spatial-reduction attention ...) follow it.
    #: Off, positions are still resampled but grid-aware parts keep the built grid; either
    #: way ``set_input_size`` rebuilds the model for a new size.
    dynamic_img_size: bool = False

    @model_validator(mode="after")
    def _cross_field_rules(self) -> VitConfig:
        check_positive(
            in_chans=self.in_chans, dim=self.dim, depth=self.depth, num_heads=self.num_heads
        )
        if self.num_classes < 0:
            raise SpecValueError("num_classes", "must be >= 0 (0 gives features, no classifier)")
        for name in ("emb_dropout", "drop_path_rate", "patch_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise SpecValueError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.register_tokens < 0:
            raise SpecValueError("register_tokens", "must be >= 0")
        context = trunk_context(
            self,
            class_token=self.class_token,
            distillation_token=self.distillation_token,
            dynamic_img_size=self.dynamic_img_size,
            attention=self.attention,
        )
        check_child(self.patch, "patch", **context)
        # grid-partitioning parts check that their windows tile the patch grid, where it is known
        token_grid = getattr(self.patch, "token_grid", None)
        if token_grid is not None:
            context["grid"] = token_grid(self.input_extent())
        for child in ("posenc", "attention", "mlp", "block", "pool", "head"):
            check_child(getattr(self, child), child, **context)
        check_heads_divide_dim(self.dim, self.num_heads, self.attention)
        return self

    def input_extent(self) -> tuple[int, ...]:
        """The extent the patchifier tiles: (H, W) for images; video configs add frames (T, H, W)."""
        return to_pair(self.image_size)


# -- the trunk's spec rules, shared by every model built like a ViT (the video models too) -----
def check_heads_divide_dim(dim: int, num_heads: int, attention: Any) -> None:
    """``num_heads`` must split ``dim`` evenly, unless the attention sets its own ``head_dim``."""
    if getattr(attention, "head_dim", None) is None and dim % num_heads:
        raise SpecValueError(
            "num_heads",
            f"num_heads={num_heads} does not divide dim={dim}; allowed: "
            f"{[h for h in range(1, min(dim, 64) + 1) if dim % h == 0]}",
        )


def trunk_context(config: Any, **facts: Any) -> dict[str, Any]:
    """What a ViT-like trunk tells its children's ``check``: the extent it tiles, its width and
    heads (plus ``facts`` such as its prefix tokens). ``config`` has ``input_extent()``,
    ``in_chans``, ``dim`` and ``num_heads``."""
    extent = config.input_extent()
    return dict(
        image_size=extent,
        in_chans=config.in_chans,
        dim=config.dim,
        num_heads=config.num_heads,
        spatial_dims=len(extent),
        **facts,
    )


class VisionTransformer(VitzooModel):
    """Vision Transformer built from registered parts.

    A flat-token ViT. Public hooks for objectives: ``embed``, ``encode``, ``forward_head``
    (architectures built on it declare the ``tokens`` capability at registration)."""

    def __init__(self, config: VitConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.config = config
        image_size = config.input_extent()
        dim = config.dim
        base = ctx.replace(dim=dim, num_heads=config.num_heads, in_chans=config.in_chans)

        self.input_size = (config.in_chans, *image_size)
        self.patch = base.build("patchifier", config.patch)
        grid = self.patch.grid_for(image_size)
        self.num_embed_prefix = int(config.class_token) + int(config.distillation_token)
        self.num_prefix_tokens = self.num_embed_prefix + config.register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        self.dist_token = (
            nn.Parameter(torch.zeros(1, 1, dim)) if config.distillation_token else None
        )
        self.reg_token = (
            nn.Parameter(torch.zeros(1, config.register_tokens, dim))
            if config.register_tokens
            else None
        )
        self.posenc = base.build(
            "posenc", config.posenc, grid=grid, num_prefix_tokens=self.num_embed_prefix
        )
        self.pos_drop = nn.Dropout(config.emb_dropout)
        self.norm_pre = (
            make_norm(config.norm, dim, config.norm_eps) if config.norm_pre else nn.Identity()
        )

        rates = drop_path_rates(config.drop_path_rate, config.depth)
        self.blocks = self.stack_blocks(base, config.block, rates, grid)
        self.norm = (
            make_norm(config.norm, dim, config.norm_eps) if config.final_norm else nn.Identity()
        )
        # the pooled vector's width: dim, or wider (cls-mean pools to 2 * dim)
        self.num_features = pooled_width(config.pool, dim)
        self.num_classes = config.num_classes
        # the model's MLP and attention specs go along: an attention-pool head (``map``) reuses
        # the MLP, a query-attention pooling the attention, by default
        self._head_ctx = base.replace(
            num_features=self.num_features,
            grid=grid,
            num_prefix_tokens=self.num_prefix_tokens,
            mlp=config.mlp,
            attention=config.attention,
        )
        self.pool = self._head_ctx.build("pooling", config.pool)
        self.fc_norm = (  # over the pooled vector, whatever its width
            make_norm(config.norm, self.num_features, config.norm_eps)
            if config.fc_norm
            else nn.Identity()
        )
        self.head = self._head_ctx.build("head", config.head, num_classes=config.num_classes)
        self._init_weights()

    def stack_blocks(
        self,
        ctx: BuildContext,
        spec: Any,
        rates: list[float],
        grid: tuple[int, ...],
        first_layer: int = 0,
    ) -> nn.ModuleList:
        """:func:`~vitzoo.components.block.block_stack` over this model's tokens (its prefix
        count, attention and MLP specs), numbered from ``first_layer``."""
        return block_stack(
            ctx,
            spec,
            rates,
            grid=grid,
            num_prefix_tokens=self.num_prefix_tokens,
            attention=self.config.attention,
            mlp=self.config.mlp,
            first_layer=first_layer,
        )

    def _init_weights(self) -> None:
        self.apply(init_vit_weights)
        for token in (self.cls_token, self.dist_token, self.reg_token):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)

    # -- the public hooks objectives use -------------------------------------------------------
    def prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        tokens = [t for t in (self.cls_token, self.dist_token) if t is not None]
        return [t.expand(batch, -1, -1) for t in tokens]

    def embed(
        self,
        x: torch.Tensor,
        patch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        positions: bool = True,
    ) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Image -> (prefix + patch tokens with positions, grid). Patch tokens follow the prefix;
        ``norm_pre`` (when set) has normalised every token.

        Hooks for masked-image objectives: ``patch_transform`` edits the (B, N, D) patch
        embeddings before prefix tokens and positions are added (SimMIM / MPP mask tokens);
        ``positions=False`` leaves positions out (MP3 predicts them from content).
        """
        tokens, grid = self.patch(x)
        if self.config.dynamic_img_size:
            self.follow_input_grid(grid)
        if patch_transform is not None:
            tokens = patch_transform(tokens)
        batch = tokens.shape[0]
        tokens = torch.cat([*self.prefix_tokens(batch), tokens], dim=1)
        if positions:
            tokens = self.posenc(tokens, grid, self.num_embed_prefix)
        if self.reg_token is not None:
            reg = self.reg_token.expand(batch, -1, -1)
            tokens = torch.cat(
                [tokens[:, : self.num_embed_prefix], reg, tokens[:, self.num_embed_prefix :]], dim=1
            )
        return self.norm_pre(self.pos_drop(tokens)), grid

    def follow_input_grid(self, grid: tuple[int, ...]) -> None:
        """``dynamic_img_size``: hand the grid of this input to every grid-aware part."""
        if tuple(grid) == self.__dict__.get("_followed_grid"):
            return
        followers = self.__dict__.get("_grid_followers")
        if followers is None:
            followers = grid_followers(self, skip=[self.posenc])
            self.__dict__["_grid_followers"] = followers
        for module in followers:
            module.follow_grid(grid)
        self.__dict__["_followed_grid"] = tuple(grid)

    def drop_patches(self, tokens: torch.Tensor, num_prefix: int | None = None) -> torch.Tensor:
        """Training-time patch dropout: keep a random subset of patch tokens (prefix always kept).

        ``num_prefix`` overrides ``num_prefix_tokens`` for models whose embedded sequence holds
        fewer prefix tokens than their output (CaiT's class token joins after the patch stage).
        """
        rate = self.config.patch_dropout
        if not self.training or rate == 0.0:
            return tokens
        n_prefix = self.num_prefix_tokens if num_prefix is None else num_prefix
        prefix, patches = tokens[:, :n_prefix], tokens[:, n_prefix:]
        batch, n, dim = patches.shape
        keep = max(1, int(n * (1.0 - rate)))
        index = torch.rand(batch, n, device=tokens.device).argsort(dim=1)[:, :keep]
        patches = patches.gather(1, index.unsqueeze(-1).expand(-1, -1, dim))
        return torch.cat([prefix, patches], dim=1)

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the blocks and the final norm over a token sequence."""
        for block in self.blocks:
            tokens = run_block(block, tokens, self.grad_checkpointing, mask=mask)
        return self.norm(tokens)

    # -- the model protocol ------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.embed(x)
        return self.encode(self.drop_patches(tokens))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> Any:
        pooled = self.fc_norm(self.pool_tokens(features))
        if pre_logits:
            return pooled if pooled.ndim == 2 else pooled.mean(dim=1)
        return self.head(pooled)

    def pool_tokens(self, features: Any) -> torch.Tensor:
        """``forward_features``' output -> the pooled vector(s) the head reads (a model with a
        packed path pools each image of a packed batch here)."""
        return self.pool(features, self.num_prefix_tokens)

    # -- structure for the backbone API (VitzooModel.forward_intermediates & co.) ------------
    def feature_layer_names(self) -> list[str]:
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def intermediate_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        return self.embed(x)

    def intermediate_layer(
        self, index: int, state: tuple[torch.Tensor, tuple[int, ...]]
    ) -> tuple[torch.Tensor, tuple[int, ...]]:
        tokens, grid = state
        return run_block(self.blocks[index], tokens, self.grad_checkpointing), grid

    def intermediate_prefix_tokens(self) -> int:
        """Prefix tokens in the sequence the blocks see (CaiT's class token joins later)."""
        return self.num_prefix_tokens

    def intermediate_map(
        self, index: int, state: tuple[torch.Tensor, tuple[int, ...]], norm: bool
    ) -> torch.Tensor:
        tokens, grid = state
        patches = tokens[:, self.intermediate_prefix_tokens() :]
        if norm:
            patches = self.norm(patches)
        return tokens_to_grid_map(patches, grid)

    def intermediate_final(self, state: tuple[torch.Tensor, tuple[int, ...]]) -> torch.Tensor:
        return self.norm(state[0])

    def truncate_feature_layers(self, keep: int) -> None:
        self.blocks = self.blocks[:keep]

    # -- classifier --------------------------------------------------------------------------
    #: timm's names for the pooling choices, mapped to the registered pooling types.
    POOL_ALIASES = {"token": "cls", "avg": "mean"}

    def global_pool_choices(self) -> list[str]:
        return sorted(
            {*self._head_ctx.registry.names("pooling"), *self.POOL_ALIASES, self.config.pool.type}
        )

    def set_global_pool(self, global_pool: str) -> None:
        """Swap the pooling for another registered one (timm's ``token`` / ``avg`` accepted)."""
        super().set_global_pool(global_pool)
        name = self.POOL_ALIASES.get(global_pool, global_pool)
        if name == self.config.pool.type:
            return
        from vitzoo.spec import resolved_config

        config = resolved_config(self._head_ctx.registry, "pooling", name)()
        config.check(
            class_token=self.config.class_token,
            distillation_token=self.config.distillation_token,
        )
        # new parts go where the model is (the old pooling often has no parameter to ask)
        reference = next(iter(self.parameters()), None)

        def placed(module: nn.Module) -> nn.Module:
            if reference is None:
                return module
            return module.to(device=reference.device, dtype=reference.dtype)

        # a pooling of another width changes the head's input (reset_classifier rebuilds it)
        # and that of the pooled vector's norm, which is rebuilt here (fresh: a norm trained on
        # D-wide vectors has no meaning at 2 D); the pooling is built as __init__ builds it
        width = pooled_width(config, self.config.dim)
        self._head_ctx = self._head_ctx.replace(num_features=width)
        self.pool = placed(self._head_ctx.build("pooling", config))
        if width != self.num_features and self.config.fc_norm:
            self.fc_norm = placed(make_norm(self.config.norm, width, self.config.norm_eps))
        self.num_features = width
        # the spec follows, so a saved checkpoint rebuilds the model with this pooling
        self.config = self.config.model_copy(update={"pool": config})
        spec = getattr(self, "vitzoo_spec", None)
        if spec is not None:
            self.vitzoo_spec = spec.model_copy(
                update={"model": spec.model.model_copy(update={"pool": config})}
            )

    def no_weight_decay(self) -> set[str]:
        """Tokens, position tables and relative-position tables (BEiT's recipe, as the
        hierarchical models already do)."""
        names = {"cls_token", "dist_token", "reg_token"}
        return {
            n
            for n, _ in self.named_parameters()
            if n in names or "pos_embed" in n or "relative_position" in n
        }


def tokens_to_grid_map(tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """(B, prod(grid), C) patch tokens -> (B, C, *grid): (B, C, H, W), or (B, C, T, H, W)."""
    b, n, c = tokens.shape
    if n != math.prod(grid):
        raise ValueError(f"{n} tokens do not lie on the {tuple(grid)} patch grid")
    return tokens.transpose(1, 2).reshape(b, c, *grid)


#: The class itself is the factory (``register("vit", VisionTransformer, VitConfig)``); the old
#: factory name stays for plugins and callers that import it.
build_vit = VisionTransformer
