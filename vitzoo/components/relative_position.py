"""CrossFormer's dynamic position bias (DPB): relative offsets -> per-head biases through an MLP.

The learned-table bias (Swin, MaxViT, RegionViT) is
:class:`vitzoo.components.windows.RelativePositionBias`; its table size is fixed by the window.
DPB instead maps each offset ``(dy, dx)`` itself through a small MLP, so its parameters do not
depend on the group size: the same weights serve groups of any shape (other image sizes, the
last stage's whole-map group). A module is bound to one group size and, like the table bias,
``forward()`` returns ``(heads, N, N)`` to pass as ``bias=`` to ``AttentionBase.attend``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vitzoo.components.windows import relative_position_index


def relative_offsets(group: Sequence[int]) -> torch.Tensor:
    """Every distinct (dy, dx) offset inside an (h, w) group, ((2h-1)(2w-1), 2), row-major.

    Row-major order matches :func:`~vitzoo.components.windows.relative_position_index`.
    """
    h, w = group
    dy, dx = torch.arange(1 - h, h), torch.arange(1 - w, w)
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)


class DynamicPositionBias(nn.Module):
    """``(dy, dx) -> Linear -> 3 x [LayerNorm, ReLU, Linear] -> heads`` (CrossFormer, Sec. 3.3).

    ``hidden`` is the MLP width (CrossFormer uses a quarter of a quarter of the stage width).
    """

    def __init__(self, hidden: int, num_heads: int, group: Sequence[int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.group = tuple(group)
        self.pos_proj = nn.Linear(2, hidden)
        self.pos_mlp = nn.Sequential(
            *(
                nn.Sequential(nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, out))
                for out in (hidden, hidden, num_heads)
            )
        )
        self.register_buffer("offsets", relative_offsets(self.group).float(), persistent=False)
        self.register_buffer("index", relative_position_index(self.group), persistent=False)

    def forward(self) -> torch.Tensor:
        bias = self.pos_mlp(self.pos_proj(self.offsets.to(self.pos_proj.weight.dtype)))
        n = self.index.shape[0]
        return bias[self.index.reshape(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
