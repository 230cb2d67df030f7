"""Built-in plugin: SepViT (Li et al., 2022, arXiv:2203.15380) and its ImageNet preset.

SepViT's depthwise separable self-attention is registered as the ``dssa`` attention:

* depthwise self-attention (DSA): each window of ``window_size x window_size`` tokens plus one
  learned **window token** attends within itself (fused SDPA over all windows at once);
* pointwise self-attention (PSA): the window tokens, after LayerNorm + GELU, give one query and
  one key per window; the attention among windows then mixes the windows' whole feature maps
  (the values), so information flows across windows at the cost of one token per window.

Both steps keep a residual, as in the authors' code. With a single window (the last stage at
224 px) PSA has nothing to mix and is skipped, again as in the authors' code. The number of
window tokens is ``(H / window_size) * (W / window_size)`` -- ``window_size`` is honoured (the
vit-pytorch port always used 7). Blocks cycle through the per-stage window sizes (SepViT-T
alternates 7 and 14 in stages 2 and 3), with a PEG after each stage's first block.

The official block feeds the window token through the block's pre-norm together with the
tokens; here it enters the attention directly after that norm. A free learned token can take
any value the normalised one can, so the model family and parameter count are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentSpec, SpecValueError, component_default, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention
from vitzoo.components.context import BuildContext
from vitzoo.components.downsample import ConvEmbedStagesConfig, build_conv_embed_stages
from vitzoo.components.hierarchical import (
    HierarchicalModel,
    check_positive,
)
from vitzoo.components.resample import resize_per_window_table
from vitzoo.components.windows import (
    GridBoundAttentionChecks,
    require_tiling,
    window_partition,
    window_reverse,
)
from vitzoo.config import PositiveFloat, PositiveInt
from vitzoo.registration_examples import grid_only_example


class DssaConfig(GridBoundAttentionChecks, MhsaConfig):
    """Depthwise separable self-attention: window attention with window tokens, then attention
    among windows driven by those tokens (SepViT)."""

    type: Literal["dssa"] = "dssa"  # type: ignore[assignment]
    window_size: PositiveInt = 7

    def check_fields(self) -> None:
        check_positive(window_size=self.window_size)
        if self.head_dim is not None:
            raise SpecValueError("head_dim", "dssa splits the model width evenly over heads")
        if self.head_merge != "head-major":
            raise SpecValueError(
                "head_merge", "dssa merges heads in its own layout; allowed: head-major"
            )

    def check_grid_fit(self, grid: Sequence[int]) -> None:
        require_tiling(grid, self.window_for(grid), f"dssa windows of {self.window_size}")

    def window_for(self, grid: Sequence[int]) -> tuple[int, int]:
        return (min(self.window_size, grid[0]), min(self.window_size, grid[1]))


def num_windows(grid: Sequence[int], window: Sequence[int]) -> int:
    return (grid[0] // window[0]) * (grid[1] // window[1])


class DepthwiseSeparableAttention(MultiHeadAttention):
    """DSA inside windows (with a learned window token each) followed by PSA across windows."""

    def __init__(self, dim: int, num_heads: int, grid: Sequence[int], config: DssaConfig):
        super().__init__(dim, num_heads, config)
        if len(grid) != 2:
            raise ValueError(f"dssa needs the 2D token grid, got {grid}")
        self.grid = (int(grid[0]), int(grid[1]))
        self.window = config.window_for(self.grid)
        if self.grid[0] % self.window[0] or self.grid[1] % self.window[1]:
            raise ValueError(f"dssa window {config.window_size} does not tile the grid {grid}")
        self.num_windows = num_windows(self.grid, self.window)
        # qkv / proj of MultiHeadAttention serve DSA; PSA adds the window-token path.
        self.pointwise = self.num_windows > 1
        if self.pointwise:
            self.window_tokens = nn.Parameter(torch.zeros(1, self.num_windows, 1, dim))
            self.window_token_norm = nn.LayerNorm(dim)
            self.window_token_act = nn.GELU()
            self.psa_qk = nn.Linear(dim, 2 * dim, bias=config.qkv_bias)

    def resample_tensor(
        self, name: str, tensor: torch.Tensor, old: DepthwiseSeparableAttention
    ) -> torch.Tensor | None:
        """Window tokens for another grid: resampled as a map over the windows."""
        if name != "window_tokens":
            return None
        old_windows = (old.grid[0] // old.window[0], old.grid[1] // old.window[1])
        new_windows = (self.grid[0] // self.window[0], self.grid[1] // self.window[1])
        return resize_per_window_table(tensor, old_windows, new_windows)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., n, C) -> (..., heads, n, d)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("dssa does not take token masks")
        b, n, c = x.shape
        h, w = self.grid
        windows = window_partition(x.view(b, h, w, c), self.window)  # (B*nW, ws*ws, C)
        if self.pointwise:
            tokens = self.window_tokens.expand(b, -1, -1, -1).reshape(-1, 1, c)
            windows = torch.cat([tokens, windows], dim=1)
        # Depthwise self-attention: every window (and its token) on its own, plus a residual.
        q, k, v = self.split_heads(windows)
        windows = windows + self.attend(q, k, v).transpose(1, 2).reshape(windows.shape)
        if self.pointwise:
            tokens, windows = windows[:, 0], windows[:, 1:]
            tokens = self.window_token_act(self.window_token_norm(tokens)).view(b, -1, c)
            qk = self.psa_qk(tokens).view(b, -1, 2, self.num_heads, self.head_dim)
            pq, pk = qk.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, nW, d)
            maps = windows.reshape(b, self.num_windows, -1, c)  # (B, nW, ws*ws, C)
            values = self._heads(maps).permute(0, 2, 1, 3, 4).flatten(3)  # (B, heads, nW, ws*ws*d)
            # Pointwise self-attention among windows: one query/key per window token, each
            # window's whole map as the value.
            mixed = self.attend(pq, pk, values, scale=self.head_dim**-0.5)
            mixed = mixed.unflatten(-1, (-1, self.head_dim)).permute(0, 2, 3, 1, 4).flatten(3)
            windows = (maps + mixed).reshape(-1, maps.shape[2], c)
        out = window_reverse(windows, self.window, self.grid).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


def build_dssa(config: DssaConfig, ctx: BuildContext) -> DepthwiseSeparableAttention:
    """Depthwise separable self-attention with window tokens (SepViT)."""
    return DepthwiseSeparableAttention(ctx.dim, ctx.num_heads, ctx.grid, config)


class SepVitConfig(ConvEmbedStagesConfig):
    """SepViT: conv embeddings, DSSA blocks (window sizes cycled per stage), PEG after block 1.

    Per-stage lists: ``dims``, ``depths``, ``num_heads`` and ``window_sizes`` -- one tuple per
    stage, block ``j`` of a stage using ``window_sizes[stage][j % len]``.
    """

    type: Literal["sepvit"] = "sepvit"
    dims: tuple[PositiveInt, ...] = (96, 192, 384, 768)
    depths: tuple[PositiveInt, ...] = (1, 2, 6, 2)
    num_heads: tuple[PositiveInt, ...] = (3, 6, 12, 24)
    window_sizes: tuple[tuple[PositiveInt, ...], ...] = ((7,), (7, 14), (7, 14), (7,))
    attention: ComponentSpec("attention") = component_default(type="dssa")
    mlp: ComponentSpec("mlp") = component_default(type="mlp", ratio=4.0)
    block: ComponentSpec("block") = component_default(type="pre-norm")
    norm_eps: PositiveFloat = 1e-6

    def block_attention(self, stage: int, index: int) -> Any:
        if not isinstance(self.attention, DssaConfig):
            return self.attention
        sizes = self.window_sizes[stage]
        return self.attention.model_copy(update={"window_size": sizes[index % len(sizes)]})

    @model_validator(mode="after")
    def _rules(self) -> SepVitConfig:
        self.check_stages(lists=dict(window_sizes=self.window_sizes))
        for i, sizes in enumerate(self.window_sizes):
            if not sizes:
                raise SpecValueError(f"window_sizes.{i}", "give at least one window size")
            check_positive(**{f"window_sizes.{i}": sizes})
        self.check_children("attention", "mlp", "block", class_token=False)
        if isinstance(self.attention, DssaConfig):
            for i, grid in enumerate(self.stage_grids()):
                for size in self.window_sizes[i]:
                    window = self.attention.model_copy(update={"window_size": size})
                    win = window.window_for(grid)
                    if grid[0] % win[0] or grid[1] % win[1]:
                        stride = self.stem_stride * 2**i
                        raise SpecValueError(
                            "image_size",
                            f"stage {i + 1} has a {grid[0]}x{grid[1]} token grid that windows "
                            f"of {size} (window_sizes.{i}) do not tile; allowed: image sizes "
                            f"that are multiples of {stride * size} (window x stage stride)",
                        )
        return self


class SepVit(HierarchicalModel):
    """SepViT (depthwise separable self-attention).

    Stages of [conv embedding, DSSA blocks with a PEG after the first] -> norm -> head.
    """

    def __init__(self, config: SepVitConfig, ctx: BuildContext) -> None:
        super().__init__()
        base = ctx.replace(in_chans=config.in_chans)
        self.stem = nn.Identity()
        self.stages = build_conv_embed_stages(
            base, config, attention=config.block_attention, embed_norm_eps=1e-5
        )
        self.init_tail(config, base, config.dims[-1], map_norm_eps=config.norm_eps)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {
            n for n, _ in self.named_parameters() if n.endswith("window_tokens")
        }


TINY = {
    "image_size": 32,
    "num_classes": 10,
    "dims": (32, 64),
    "depths": (2, 2),
    "num_heads": (2, 2),
    "window_sizes": ((2, 4), (2,)),
}


@hookimpl
def register_attention(register: Any) -> None:
    register(
        "dssa",
        build_dssa,
        DssaConfig,
        tags={"sdpa"},
        needs={"grid-2d", "fixed-grid", "no-prefix-tokens"},
        example=grid_only_example(window_size=2),
    )


@hookimpl
def register_architectures(register: Any) -> None:
    register("sepvit", SepVit, SepVitConfig, tags={"image", "feature-maps"}, example=TINY)


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "sepvit")
