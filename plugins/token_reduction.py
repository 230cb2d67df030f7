"""Built-in plugin: token reduction inside the ViT base.

* ``patch-merger-vit``: PatchMerger (Renggli et al. 2022, arXiv:2202.12015). After block
  ``merge_after`` the patch tokens X (N x D) are replaced by Y = softmax(W LN(X)^T) LN(X), M learned
  queries W (M x D) each taking a convex combination of tokens; later blocks see M tokens.
* ``ats-vit``: Adaptive Token Sampling (Fayyaz et al. 2022, arXiv:2111.15667). At layers with a
  budget K, after the attention, each patch token gets the significance score
  S_j = sum_h A_h[cls, j] * ||V_h,j|| (normalised), and K points of the inverse CDF of S pick the
  tokens to keep (duplicates collapse, so fewer than K may remain: the sampling is adaptive). It is
  parameter-free, so ATS runs on the weights of a plain ViT. Samples keep different numbers of
  tokens; the batch is padded and a key-padding mask (True = real token) carries that to later
  blocks. ``forward_with_kept`` also returns which patches survived.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn

from vitzoo import ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig
from vitzoo.components.block import PreNormBlock, PreNormBlockConfig
from vitzoo.components.context import BuildContext
from vitzoo.components.model import run_block
from vitzoo.components.vit import VisionTransformer, VitConfig, tokens_to_grid_map
from vitzoo.config import NonNegativeInt, PositiveInt
from vitzoo.registration_examples import TINY_VIT

TINY = TINY_VIT


# ---------------------------------------------------------------------------------------------
# PatchMerger
# ---------------------------------------------------------------------------------------------
class PatchMerger(nn.Module):
    """Merge N patch tokens into ``num_tokens`` learned-query mixtures; prefix tokens pass through."""

    def __init__(self, dim: int, num_tokens: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.queries = nn.Parameter(torch.zeros(num_tokens, dim))
        nn.init.trunc_normal_(self.queries, std=0.02)

    def forward(
        self, tokens: torch.Tensor, num_prefix: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``mask`` (B, N) excludes padded tokens from every mixture."""
        prefix, patches = tokens[:, :num_prefix], self.norm(tokens[:, num_prefix:])
        scores = self.queries @ patches.transpose(1, 2)  # (B, M, N)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, num_prefix:], torch.finfo(scores.dtype).min)
        return torch.cat([prefix, scores.softmax(dim=-1) @ patches], dim=1)


class PatchMergerVitConfig(VitConfig):
    """ViT with a PatchMerger after block ``merge_after`` (0-based); mean pooling, no class token."""

    type: Literal["patch-merger-vit"] = "patch-merger-vit"
    merge_after: NonNegativeInt = 5
    merge_tokens: PositiveInt = 8
    class_token: bool = False
    pool: ComponentSpec("pooling") = component_default(type="mean")

    @model_validator(mode="after")
    def _merger_rules(self) -> PatchMergerVitConfig:
        if not 0 <= self.merge_after < self.depth:
            raise SpecValueError(
                "merge_after",
                f"must be a block index in [0, {self.depth - 1}], got {self.merge_after}",
            )
        if self.merge_tokens < 1:
            raise SpecValueError("merge_tokens", f"must be >= 1, got {self.merge_tokens}")
        return self


class PatchMergerViT(VisionTransformer):
    """ViT with a PatchMerger (Renggli et al. 2022).

    The ViT base whose token count drops to ``merge_tokens`` after one chosen block.
    """

    def __init__(self, config: PatchMergerVitConfig, ctx: BuildContext) -> None:
        super().__init__(config, ctx)
        self.merger = PatchMerger(config.dim, config.merge_tokens, config.norm_eps)

    def _blocks(
        self, tokens: torch.Tensor, mask: torch.Tensor | None, start: int = 0
    ) -> torch.Tensor:
        for i in range(start, len(self.blocks)):
            tokens = run_block(self.blocks[i], tokens, self.grad_checkpointing, mask=mask)
            if i == self.config.merge_after:
                tokens, mask = self.merger(tokens, self.num_prefix_tokens, mask), None
        return tokens

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and mask.ndim != 2:
            raise ValueError("patch-merger-vit takes a (B, N) key-padding mask")
        return self.norm(self._blocks(tokens, mask))

    # -- structure: only blocks up to the merge have tokens on the patch grid (merged tokens
    # are mixtures of every position), so they are the feature layers; the final step merges
    # and runs the rest
    def feature_layer_names(self) -> list[str]:
        return super().feature_layer_names()[: self.config.merge_after + 1]

    def intermediate_final(self, state: tuple[torch.Tensor, tuple[int, ...]]) -> torch.Tensor:
        tokens = self.merger(state[0], self.num_prefix_tokens)
        return self.norm(self._blocks(tokens, None, start=self.config.merge_after + 1))

    def truncate_feature_layers(self, keep: int) -> None:
        super().truncate_feature_layers(keep)
        self.merger = nn.Identity()


# ---------------------------------------------------------------------------------------------
# Adaptive token sampling
# ---------------------------------------------------------------------------------------------
def significance_scores(
    q_cls: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """S_j = sum_h softmax(q_cls k^T)_j * ||v_j||, for (B, H, 1, d) / (B, H, N, d) inputs -> (B, N)."""
    logits = (q_cls @ k.transpose(-1, -2)).squeeze(2) * scale  # (B, H, N)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None], torch.finfo(logits.dtype).min)
    weights = logits.softmax(dim=-1)
    return (weights * v.norm(dim=-1)).sum(dim=1)


def sample_tokens(
    scores: torch.Tensor, mask: torch.Tensor | None, num_prefix: int, budget: int
) -> torch.Tensor:
    """Inverse-transform sampling of ``budget`` patch tokens -> (B, N) bool "keep" selection.

    Prefix tokens are always kept; padded tokens never are. Fixed, evenly spaced points of the
    CDF are used (deterministic, as in the paper), and repeated picks collapse into one token.
    """
    batch, n = scores.shape
    real = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask
    patch_scores = scores[:, num_prefix:].masked_fill(~real[:, num_prefix:], 0.0).clamp(min=0)
    total = patch_scores.sum(dim=1, keepdim=True)
    cdf = patch_scores.cumsum(dim=1) / total.clamp(min=torch.finfo(scores.dtype).tiny)
    points = (torch.arange(budget, device=scores.device, dtype=cdf.dtype) + 0.5) / budget
    # searchsorted (left) on a non-decreasing CDF = how many CDF values lie below each point;
    # written as a comparison because ONNX has no searchsorted (the (B, K, N) mask is small)
    picks = (cdf[:, None, :] < points[None, :, None]).sum(dim=-1)
    picks = picks.clamp(max=n - num_prefix - 1) + num_prefix
    keep = torch.zeros(batch, n, dtype=torch.bool, device=scores.device)
    keep.scatter_(1, picks, True)
    few = real[:, num_prefix:].sum(dim=1, keepdim=True) <= budget  # under budget: keep them all
    keep = real & (few | keep)
    keep[:, :num_prefix] = True
    return keep


def compact(
    tokens: torch.Tensor, keep: torch.Tensor, ids: torch.Tensor, max_kept: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move kept tokens to the front (original order), pad to the longest sample, build its mask.

    A traced graph (``torch.export``, ``torch.compile``) cannot take a shape from a tensor's
    value, so there the batch is padded to ``max_kept``, the most tokens a layer's budget can keep:
    the extra slots are masked padding, so the real tokens and the logits are unchanged.
    """
    counts = keep.sum(dim=1)
    tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting()
    width = min(max_kept, keep.shape[1]) if tracing else int(counts.max())
    n = keep.shape[1]
    # kept tokens first, each group in its original order: a stable argsort of ~keep, written
    # as top-k of distinct ranks because ONNX has no stable sort
    rank = keep.long() * n + (n - 1 - torch.arange(n, device=keep.device))
    order = rank.topk(width, dim=1).indices
    new_mask = torch.arange(width, device=tokens.device)[None] < counts[:, None]
    tokens = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
    ids = ids.gather(1, order).masked_fill(~new_mask, -1)
    return tokens, new_mask, ids


def ats_block(
    block: PreNormBlock,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    ids: torch.Tensor,
    num_prefix: int,
    budget: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A pre-norm block with ATS between its attention and its MLP (the paper's placement)."""
    attn = block.attn
    q, k, v = attn.split_heads(block.norm1(x))
    x = x + block.drop_path(block.ls1(attn.merge_heads(attn.attend(q, k, v, mask))))
    scores = significance_scores(q[:, :, :1], k, v, mask, attn.head_dim**-0.5)
    keep = sample_tokens(scores, mask, num_prefix, budget)
    x, mask, ids = compact(x, keep, ids, num_prefix + budget)
    return x + block.drop_path(block.ls2(block.mlp(block.norm2(x)))), mask, ids


class AtsVitConfig(VitConfig):
    """ViT with adaptive token sampling; ``max_tokens[i]`` is layer i's patch-token budget (or null)."""

    type: Literal["ats-vit"] = "ats-vit"
    max_tokens: list[PositiveInt | None] = []

    @model_validator(mode="after")
    def _ats_rules(self) -> AtsVitConfig:
        if self.max_tokens and len(self.max_tokens) != self.depth:
            raise SpecValueError(
                "max_tokens",
                f"needs one budget per layer (depth={self.depth}), got {len(self.max_tokens)}",
            )
        for i, budget in enumerate(self.max_tokens):
            if budget is not None and budget < 1:
                raise SpecValueError(("max_tokens", i), f"must be >= 1 or null, got {budget}")
        if not self.class_token or self.pool.type != "cls":
            raise SpecValueError(
                "pool",
                "ATS scores tokens by the class token's attention; needs class_token "
                "true and pool type cls (padding would bias mean pooling)",
            )
        if not isinstance(self.attention, MhsaConfig) or self.attention.type != "mhsa":
            raise SpecValueError("attention.type", "ATS reads multi-head attention; allowed: mhsa")
        if not isinstance(self.block, PreNormBlockConfig):
            raise SpecValueError(
                "block.type", "ATS is placed inside pre-norm blocks; allowed: pre-norm"
            )
        if self.block.norm_position != "pre":
            raise SpecValueError(
                "block.norm_position", "ATS sits between pre-norm branches; allowed: pre"
            )
        if self.attention.cosine:
            raise SpecValueError("attention.cosine", "ATS scores dot-product logits; must be false")
        if self.patch_dropout:
            raise SpecValueError("patch_dropout", "ATS selects tokens itself; must be 0")
        return self


#: What ATS carries between blocks: tokens, padding mask, original index of each token, grid.
AtsState = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, tuple[int, ...]]


class AtsViT(VisionTransformer):
    """ViT with adaptive token sampling (Fayyaz et al. 2022).

    The ViT base with ATS in the layers that have a budget (weights identical to a plain ViT).
    """

    def __init__(self, config: AtsVitConfig, ctx: BuildContext) -> None:
        super().__init__(config, ctx)
        self.budgets: list[int | None] = list(config.max_tokens) or [None] * config.depth

    def encode_with_kept(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Blocks + final norm; returns (tokens, padding mask, original index of every token)."""
        if mask is not None and mask.ndim != 2:
            raise ValueError("ats-vit takes a (B, N) key-padding mask")
        batch, n, _ = tokens.shape
        state: AtsState = (
            tokens,
            mask,
            torch.arange(n, device=tokens.device).expand(batch, -1),
            (),
        )
        for i in range(len(self.blocks)):
            state = self.intermediate_layer(i, state)
        tokens, mask, ids, _ = state
        return self.norm(tokens), mask, ids

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode_with_kept(tokens, mask)[0]

    def forward_with_kept(
        self, x: torch.Tensor, patch_mask: torch.Tensor | None = None
    ) -> tuple[Any, torch.Tensor]:
        """Logits and the indices of the patches still present after the last block.

        ``patch_mask`` (B, num_patches) marks real patches (False = padding, e.g. a smaller image
        padded into the batch). Kept indices are row-major positions on the patch grid, padded
        with -1.
        """
        tokens, _ = self.embed(x)
        mask = None
        if patch_mask is not None:
            prefix = patch_mask.new_ones(patch_mask.shape[0], self.num_prefix_tokens)
            mask = torch.cat([prefix, patch_mask], dim=1)
        features, _, ids = self.encode_with_kept(tokens, mask)
        kept = ids[:, self.num_prefix_tokens :] - self.num_prefix_tokens
        return self.forward_head(features), kept.clamp(min=-1)

    # -- structure: every block is a feature layer; tokens ATS dropped leave zeros at their
    # grid positions (the kept tokens are scattered back by their original index)
    def intermediate_stem(self, x: torch.Tensor) -> AtsState:
        tokens, grid = self.embed(x)
        batch, n, _ = tokens.shape
        ids = torch.arange(n, device=tokens.device).expand(batch, -1)
        return tokens, None, ids, grid

    def intermediate_layer(self, index: int, state: AtsState) -> AtsState:
        tokens, mask, ids, grid = state
        budget = self.budgets[index]
        if budget is None:
            tokens = run_block(self.blocks[index], tokens, self.grad_checkpointing, mask=mask)
        else:
            tokens, mask, ids = ats_block(
                self.blocks[index], tokens, mask, ids, self.num_prefix_tokens, budget
            )
        return tokens, mask, ids, grid

    def intermediate_map(self, index: int, state: AtsState, norm: bool) -> torch.Tensor:
        tokens, _, ids, grid = state
        p = self.num_prefix_tokens
        patches = self.norm(tokens[:, p:]) if norm else tokens[:, p:]
        batch, _, dim = patches.shape
        slots = math.prod(grid)
        # padding ids (-1) go to an extra slot that is cut off
        where = torch.where(ids[:, p:] < 0, slots, ids[:, p:] - p)
        full = patches.new_zeros(batch, slots + 1, dim)
        full = full.scatter(1, where[..., None].expand(-1, -1, dim), patches)
        return tokens_to_grid_map(full[:, :slots], grid)

    def intermediate_final(self, state: AtsState) -> torch.Tensor:
        return self.norm(state[0])

    def truncate_feature_layers(self, keep: int) -> None:
        super().truncate_feature_layers(keep)
        self.budgets = self.budgets[:keep]

    def shard_units(self) -> list[str]:
        """A layer with a token budget runs its block's parts one by one (:func:`ats_block`:
        the token scores need the attention's queries and keys), so there the parts it calls
        whole are the units -- the attention's two projections and the MLP, nearly all of the
        layer's weights; its norms and layer scales join the model's other parameters."""
        units = []
        for unit in super().shard_units():
            kind, _, index = unit.partition(".")
            if kind == "blocks" and self.budgets[int(index)] is not None:
                units += [f"{unit}.attn.qkv", f"{unit}.attn.proj", f"{unit}.mlp"]
            else:
                units.append(unit)
        return units


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "patch-merger-vit",
        PatchMergerViT,
        PatchMergerVitConfig,
        tags={"image", "tokens", "mask", "drops-tokens"},
        example=TINY | {"merge_after": 0, "merge_tokens": 4},
    )
    register(
        "ats-vit",
        AtsViT,
        AtsVitConfig,
        tags={"image", "tokens", "mask", "drops-tokens"},
        example=TINY | {"max_tokens": [8, 4]},
    )
