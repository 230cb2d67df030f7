"""Built-in plugin: ViT for small-size datasets (Lee, Lee & Song, 2021, arXiv:2112.13492).

Two independent mechanisms, each registered on its own so any spec can use either:

* **Shifted patch tokenisation** (patchifier ``spt``): the image and four copies shifted
  diagonally by half a patch are concatenated on channels, cut into patches, layer-normalised and
  projected -- each token sees a wider receptive field;
* **Locality self-attention** (attention ``lsa``): a learned softmax temperature and a mask on the
  attention diagonal (a token may not attend to itself), which sharpens attention.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentConfig, hookimpl
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention, as_attention_mask
from vitzoo.components.context import BuildContext
from vitzoo.components.layers import to_pair
from vitzoo.components.patchify import Patchifier, check_divisible
from vitzoo.config import SizeOrPair


# -- shifted patch tokenisation -----------------------------------------------------------------
class SptConfig(ComponentConfig):
    """Shifted patch tokenisation: [x, 4 half-patch diagonal shifts] -> patches -> LN -> Linear."""

    type: Literal["spt"] = "spt"
    patch_size: SizeOrPair = 16

    def check(self, image_size: Any = None, **_: Any) -> None:
        if image_size is not None:
            check_divisible(image_size, self.patch_size)


#: (dy, dx) translations of the four shifted copies, in the authors' order and sense
#: (aanna0701/SPT_LSA_ViT ``PatchShifting``): their "left-up" copy is the zero-padded image cropped
#: at the top-left, i.e. the image moved down-right (pixel (i, j) shows x[i - s, j - s]), then
#: "right-up", "left-down", "right-down". The order matters: it fixes the layout of the
#: projection's input, so the authors' weights load as they are.
SHIFTS: tuple[tuple[int, int], ...] = ((1, 1), (1, -1), (-1, 1), (-1, -1))


def shift_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate (B, C, H, W) by (dy, dx) pixels, filling uncovered pixels with zeros."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + h, left : left + w]


class ShiftedPatchTokenizer(Patchifier):
    def __init__(self, in_chans: int, dim: int, patch_size: tuple[int, int]) -> None:
        super().__init__()
        self.patch_size = patch_size
        ph, pw = patch_size
        self.shift = (ph // 2, pw // 2)
        patch_dim = in_chans * (1 + len(SHIFTS)) * ph * pw
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)

    def grid_for(self, image_size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // p for s, p in zip(image_size, self.patch_size, strict=True))

    def shifted_stack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 5C, H, W): the image followed by its four shifted copies."""
        sy, sx = self.shift
        return torch.cat([x, *(shift_image(x, dy * sy, dx * sx) for dy, dx in SHIFTS)], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if x.ndim != 4:
            raise ValueError(f"spt expects images (B, C, H, W), got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ValueError(
                f"image size {(h, w)} is not divisible by patch size {self.patch_size}"
            )
        stacked = self.shifted_stack(x)
        c = stacked.shape[1]
        grid = (h // ph, w // pw)
        patches = stacked.reshape(b, c, grid[0], ph, grid[1], pw).permute(0, 2, 4, 3, 5, 1)
        patches = patches.reshape(b, grid[0] * grid[1], ph * pw * c)
        return self.proj(self.norm(patches)), grid


def build_spt(config: SptConfig, ctx: BuildContext) -> ShiftedPatchTokenizer:
    """Shifted patch tokenisation (SPT)."""
    return ShiftedPatchTokenizer(ctx.in_chans, ctx.dim, to_pair(config.patch_size))  # type: ignore[arg-type]


# -- locality self-attention --------------------------------------------------------------------
class LsaConfig(MhsaConfig):
    """Locality self-attention: learned temperature (init sqrt(head_dim)) + masked diagonal."""

    type: Literal["lsa"] = "lsa"
    qkv_bias: bool = False
    #: One temperature per head, as the authors' released code learns it (the paper's text
    #: describes a single learnable temperature, the default).
    per_head: bool = False


class LocalitySelfAttention(MultiHeadAttention):
    """MHSA with softmax(q k^T / tau) where tau is learned, and no token attending to itself.

    The temperature is stored as its logarithm so it stays positive (the authors' per-head scale
    ``s`` is ``exp(-log_temperature)``). It is folded into the queries, so the fused SDPA kernel
    still runs (the diagonal is an ordinary boolean mask).
    """

    def __init__(self, dim: int, num_heads: int, config: LsaConfig) -> None:
        super().__init__(dim, num_heads, config)
        shape = (self.num_heads, 1, 1) if config.per_head else ()
        start = torch.full(shape, math.log(self.head_dim**0.5))
        self.log_temperature = nn.Parameter(start)

    def locality_mask(self, n: int, mask: torch.Tensor | None, device: Any) -> torch.Tensor:
        """The caller's mask (True = attend) with the diagonal removed, shape (B|1, H|1, N, N)."""
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=device)[None, None]
        given = as_attention_mask(mask)
        return off_diagonal if given is None else given & off_diagonal

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        q = q * torch.exp(-self.log_temperature)
        mask = self.locality_mask(x.shape[1], mask, x.device)
        return self.merge_heads(self.attend(q, k, v, mask, scale=1.0))


def build_lsa(config: LsaConfig, ctx: BuildContext) -> LocalitySelfAttention:
    """Locality self-attention (LSA)."""
    return LocalitySelfAttention(ctx.dim, ctx.num_heads, config)


@hookimpl
def register_patchifiers(register: Any) -> None:
    register(
        "spt",
        build_spt,
        SptConfig,
        tags={"image"},
        example={"config": {"patch_size": 8}, "model": {}},
    )


@hookimpl
def register_attention(register: Any) -> None:
    register("lsa", build_lsa, LsaConfig, tags={"mask"}, example={"config": {}, "model": {}})


@hookimpl
def register_presets(register: Any) -> None:
    register_catalogue_presets(register, "small-data")
