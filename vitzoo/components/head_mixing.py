"""Learned mixing across attention heads, shared by talking-heads attention and re-attention.

Both mechanisms apply a learned ``heads x heads`` linear map to an attention tensor
``(B, H, N, M)`` along its head axis: talking heads (Shazeer et al., 2020; used by CaiT) before and
after the softmax, re-attention (DeepViT) after it. The map lives here once so both variants (and
any third-party one) share the maths and the state-dict layout (``weight (H, H)``, ``bias (H,)``).
"""

from __future__ import annotations

import torch
from torch import nn


class HeadMix(nn.Module):
    """``out[:, g] = sum_h weight[g, h] * a[:, h] + bias[g]`` for an attention tensor (B, H, N, M).

    Initialised to the identity (no bias), so a freshly built model starts as plain multi-head
    attention and learns how far to let heads talk to each other. The parameters are not an
    ``nn.Linear`` on purpose: the ViT weight initialiser (truncated normal 0.02) would otherwise
    shrink the map towards zero and silence the attention at initialisation.
    """

    def __init__(self, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.weight = nn.Parameter(torch.eye(num_heads))
        self.bias = nn.Parameter(torch.zeros(num_heads)) if bias else None

    def forward(self, attention: torch.Tensor) -> torch.Tensor:
        if attention.shape[1] != self.num_heads:
            raise ValueError(
                f"expected {self.num_heads} heads on axis 1, got shape {tuple(attention.shape)}"
            )
        mixed = torch.einsum("gh,bhnm->bgnm", self.weight, attention)
        if self.bias is not None:
            mixed = mixed + self.bias.view(1, -1, 1, 1)
        return mixed

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, bias={self.bias is not None}"
