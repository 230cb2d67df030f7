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

from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn

from vitzoo import ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig
from vitzoo.components.block import PreNormBlock, PreNormBlockConfig
from vitzoo.components.context import BuildContext
from vitzoo.components.examples import TINY_VIT
from vitzoo.components.model import run_block
from vitzoo.components.vit import VisionTransformer, VitConfig
from vitzoo.config import NonNegativeInt, PositiveInt

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
    """The ViT base whose token count drops to ``merge_tokens`` after one chosen block."""

    def __init__(self, config: PatchMergerVitConfig, ctx: BuildContext) -> None:
        super().__init__(config, ctx)
        self.merger = PatchMerger(config.dim, config.merge_tokens, config.norm_eps)

    def _blocks(
        self, tokens: torch.Tensor, mask: torch.Tensor | None, keep: set[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outputs = []
        for i, block in enumerate(self.blocks):
            tokens = run_block(block, tokens, self.grad_checkpointing, mask=mask)
            if i == self.config.merge_after:
                tokens, mask = self.merger(tokens, self.num_prefix_tokens, mask), None
            if keep is not None and i in keep:
                outputs.append(tokens)
        return tokens, outputs

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None and mask.ndim != 2:
            raise ValueError("patch-merger-vit takes a (B, N) key-padding mask")
        return self.norm(self._blocks(tokens, mask)[0])

    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        depth = len(self.blocks)
        keep = set(range(depth)) if indices is None else {i % depth for i in indices}
        tokens, outputs = self._blocks(self.embed(x)[0], None, keep)
        return self.norm(tokens), outputs


def build_patch_merger_vit(config: PatchMergerVitConfig, ctx: BuildContext) -> PatchMergerViT:
    """ViT with a PatchMerger (Renggli et al. 2022)."""
    return PatchMergerViT(config, ctx)


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
    picks = torch.searchsorted(cdf.contiguous(), points.expand(batch, -1).contiguous())
    picks = picks.clamp(max=n - num_prefix - 1) + num_prefix
    keep = torch.zeros(batch, n, dtype=torch.bool, device=scores.device)
    keep.scatter_(1, picks, True)
    few = real[:, num_prefix:].sum(dim=1, keepdim=True) <= budget  # under budget: keep them all
    keep = torch.where(few, real, keep & real)
    keep[:, :num_prefix] = True
    return keep


def compact(
    tokens: torch.Tensor, keep: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move kept tokens to the front (original order), pad to the longest sample, build its mask."""
    counts = keep.sum(dim=1)
    width = int(counts.max())
    order = (~keep).to(torch.int8).argsort(dim=1, stable=True)[:, :width]
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
    x, mask, ids = compact(x, sample_tokens(scores, mask, num_prefix, budget), ids)
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
        if self.patch_dropout:
            raise SpecValueError("patch_dropout", "ATS selects tokens itself; must be 0")
        return self


class AtsViT(VisionTransformer):
    """The ViT base with ATS in the layers that have a budget (weights identical to a plain ViT)."""

    def __init__(self, config: AtsVitConfig, ctx: BuildContext) -> None:
        super().__init__(config, ctx)
        self.budgets: list[int | None] = list(config.max_tokens) or [None] * config.depth

    def encode_with_kept(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
        keep: set[int] | None = None,
        outputs: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Blocks + final norm; returns (tokens, padding mask, original index of every token)."""
        if mask is not None and mask.ndim != 2:
            raise ValueError("ats-vit takes a (B, N) key-padding mask")
        batch, n, _ = tokens.shape
        ids = torch.arange(n, device=tokens.device).expand(batch, -1)
        for i, (block, budget) in enumerate(zip(self.blocks, self.budgets, strict=True)):
            if budget is None:
                tokens = run_block(block, tokens, self.grad_checkpointing, mask=mask)
            else:
                tokens, mask, ids = ats_block(
                    block, tokens, mask, ids, self.num_prefix_tokens, budget
                )
            if keep is not None and outputs is not None and i in keep:
                outputs.append(tokens)
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

    def forward_intermediates(
        self, x: torch.Tensor, indices: list[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        depth = len(self.blocks)
        keep = set(range(depth)) if indices is None else {i % depth for i in indices}
        outputs: list[torch.Tensor] = []
        final = self.encode_with_kept(self.embed(x)[0], None, keep, outputs)[0]
        return final, outputs


def build_ats_vit(config: AtsVitConfig, ctx: BuildContext) -> AtsViT:
    """ViT with adaptive token sampling (Fayyaz et al. 2022)."""
    return AtsViT(config, ctx)


@hookimpl
def register_architectures(register: Any) -> None:
    register(
        "patch-merger-vit",
        build_patch_merger_vit,
        PatchMergerVitConfig,
        tags={"image", "tokens", "mask", "drops-tokens"},
        example=TINY | {"merge_after": 0, "merge_tokens": 4},
    )
    register(
        "ats-vit",
        build_ats_vit,
        AtsVitConfig,
        tags={"image", "tokens", "mask", "drops-tokens"},
        example=TINY | {"max_tokens": [8, 4]},
    )
