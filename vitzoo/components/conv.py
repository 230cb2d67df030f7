"""Convolutional building blocks shared by the convolutional-hybrid architectures.

* :class:`ConvNormAct` -- conv (no bias) + BatchNorm + activation, the stem / projection unit of
  LeViT, MobileViT, MaxViT; :meth:`ConvNormAct.fuse` folds the BatchNorm into the conv for
  inference.
* :class:`MBConv` -- the inverted residual (MobileNetV2 "MV2", EfficientNet "MBConv"): 1x1
  expansion, depthwise kxk (optionally strided), optional squeeze-excitation, 1x1 projection, with
  a residual where the shape allows. MaxViT uses its pre-activation form with SE, MobileViT the
  plain MV2 form.
* :class:`SqueezeExcite` -- channel gating from global context.
* :class:`PEG` -- the positional encoding generator (Chu et al., CPVT): a depthwise conv added
  residually to the token map, so position comes from zero padding. Also registered as the
  ``peg`` positional encoding for flat ViTs.
* :func:`fuse_conv_bn` -- BatchNorm folding used by the LeViT BN-fused layers too.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.mlp import ACTIVATIONS
from vitzoo.config import ComponentConfig, PositiveInt, SpecValueError

Activation = Literal["gelu", "gelu-tanh", "relu", "silu", "hardswish", "none"]
#: ``symmetric``: PyTorch's k // 2 on every side; ``same``: TensorFlow's "SAME" padding, which on
#: a strided conv pads asymmetrically (the extra row / column at the bottom / right).
Padding = Literal["symmetric", "same"]


def make_activation(name: str, *, inplace: bool = False) -> nn.Module:
    """The named activation; ``inplace`` where it owns its input (e.g. right after a norm).

    In-place saves allocating and writing a second full-size map, which on CPU costs more than
    the activation's arithmetic (MobileViT's SiLUs took 5x longer out of place).
    """
    if name == "none":
        return nn.Identity()
    cls = ACTIVATIONS[name]
    if inplace and issubclass(cls, nn.GELU):
        return InplaceGelu(approximate=cls().approximate)
    return (
        cls(inplace=True) if inplace and "inplace" in inspect.signature(cls).parameters else cls()
    )


class InplaceGelu(nn.GELU):
    """GELU that overwrites its input when no gradient needs that input (inference).

    Why: torch's GELU has no ``inplace`` flag, and on CPU writing a fresh full-size map costs
    more than GELU's arithmetic on large maps (MaxViT-T's 112x112x256 expansion: about 2x,
    mostly page faults on the new buffer; issue 12). It is only built by
    ``make_activation(inplace=True)``, i.e. where the activation owns its input. Same kernel,
    bit-identical values; while autograd records, it stays out of place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        return torch.ops.aten.gelu_(x, approximate=self.approximate)


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's "SAME" along one axis of length ``size``."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size at each call.

    Why: weights trained in TensorFlow (MaxViT's releases) saw strided convs padded (0, 1), not
    (1, 1); PyTorch's symmetric padding shifts every window by one pixel.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = tf_same_pads(x.shape[-2], kh, sh, dh)
        left, right = tf_same_pads(x.shape[-1], kw, sw, dw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def make_conv2d(
    in_chans: int,
    out_chans: int,
    kernel_size: int,
    stride: int = 1,
    *,
    padding: Padding | int = "symmetric",
    groups: int = 1,
    bias: bool = True,
) -> nn.Conv2d:
    """A conv with the named padding; "same" only differs from k // 2 when the conv is strided."""
    if padding == "same" and stride > 1:
        return Conv2dSame(in_chans, out_chans, kernel_size, stride, groups=groups, bias=bias)
    pad = padding if isinstance(padding, int) else kernel_size // 2
    return nn.Conv2d(in_chans, out_chans, kernel_size, stride, pad, groups=groups, bias=bias)


@torch.no_grad()
def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d
):
    """Fold an eval-mode BatchNorm that follows a linear map (conv or linear) into it.

    y = gamma * (W x + b - mean) / sqrt(var + eps) + beta  ==  W' x + b'.
    Returns (W', b') with W' scaled along the output axis.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    fused_w = weight * scale.reshape(shape)
    base = bias if bias is not None else torch.zeros_like(bn.running_mean)
    fused_b = (base - bn.running_mean) * scale + bn.bias
    return fused_w, fused_b


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation; ``fuse()`` gives one biased conv (+ act)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        groups: int = 1,
        activation: str = "none",
        padding: int | Padding | None = None,
        bn_init: float = 1.0,
        bn_eps: float = 1e-5,
    ) -> None:
        pad = "symmetric" if padding is None else padding
        conv = make_conv2d(
            in_chans, out_chans, kernel_size, stride, padding=pad, groups=groups, bias=False
        )
        bn = nn.BatchNorm2d(out_chans, eps=bn_eps)
        nn.init.constant_(bn.weight, bn_init)
        super().__init__(conv, bn, make_activation(activation, inplace=True))

    def fuse(self) -> nn.Sequential:
        conv, bn, act = self[0], self[1], self[2]
        fused = type(conv)(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            padding=conv.padding,
            groups=conv.groups,
            bias=True,
        ).to(conv.weight.device)
        w, b = fuse_conv_bn(conv.weight, None, bn)
        fused.weight.data.copy_(w)
        fused.bias.data.copy_(b)
        return nn.Sequential(fused, act)


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 act(W1 mean(x))) -- channel attention from global context."""

    def __init__(self, channels: int, reduced: int, activation: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = make_activation(activation)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.expand(self.act(self.reduce(s))).sigmoid()


class MBConv(nn.Module):
    """Inverted residual: [pre-norm] -> 1x1 expand -> depthwise kxk -> [SE] -> 1x1 project.

    ``pre_norm=True`` is MaxViT's pre-activation MBConv (BatchNorm first, biased projection, and a
    strided shortcut of 2x2 average pooling + 1x1 conv); ``pre_norm=False`` is MobileNetV2's MV2
    (BatchNorm after the projection, residual only when stride 1 and widths match).
    ``se_channels`` is the squeeze width (None: no SE), ``se_activation`` its activation
    (default: the block's). ``padding`` / ``bn_eps`` exist for TensorFlow-trained weights
    (MaxViT: "same" padding on the strided depthwise conv, BatchNorm eps 1e-3).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        *,
        stride: int = 1,
        expand_ratio: float = 4.0,
        expand_from: Literal["in", "out"] = "in",
        kernel_size: int = 3,
        activation: str = "silu",
        se_channels: int | None = None,
        se_activation: str | None = None,
        pre_norm: bool = False,
        drop_path: nn.Module | None = None,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        base = in_chans if expand_from == "in" else out_chans
        mid = int(round(base * expand_ratio))
        self.pre_norm = nn.BatchNorm2d(in_chans, eps=bn_eps) if pre_norm else nn.Identity()
        self.expand = (
            ConvNormAct(in_chans, mid, 1, activation=activation, bn_eps=bn_eps)
            if expand_ratio != 1
            else nn.Identity()
        )
        mid = mid if expand_ratio != 1 else in_chans
        self.depthwise = ConvNormAct(
            mid,
            mid,
            kernel_size,
            stride,
            groups=mid,
            activation=activation,
            padding=padding,
            bn_eps=bn_eps,
        )
        self.se = (
            SqueezeExcite(mid, se_channels, se_activation or activation)
            if se_channels
            else nn.Identity()
        )
        if pre_norm:
            self.project: nn.Module = nn.Conv2d(mid, out_chans, 1)
        else:
            self.project = ConvNormAct(mid, out_chans, 1, bn_eps=bn_eps)
        self.drop_path = drop_path if drop_path is not None else nn.Identity()
        self.residual = stride == 1 and in_chans == out_chans
        self.shortcut: nn.Module | None = None
        if pre_norm and not self.residual:
            # Pre-activation blocks always keep a residual path; it pools and re-projects.
            pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
            proj = nn.Conv2d(in_chans, out_chans, 1) if in_chans != out_chans else nn.Identity()
            self.shortcut = nn.Sequential(pool, proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(self.pre_norm(x)))))
        if self.residual:
            return x + self.drop_path(y)
        if self.shortcut is not None:
            return self.shortcut(x) + self.drop_path(y)
        return y


class PEG(nn.Module):
    """Positional encoding generator: ``x + DWConv_kxk(x)`` on a (B, C, H, W) map."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x)

    def forward_tokens(
        self, tokens: torch.Tensor, grid: Sequence[int], num_prefix_tokens: int = 0
    ) -> torch.Tensor:
        """The same on (B, prefix + H*W, C) tokens; prefix tokens pass through unchanged."""
        prefix, patches = tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:]
        b, n, c = patches.shape
        fmap = patches.transpose(1, 2).reshape(b, c, *grid)
        patches = self(fmap).flatten(2).transpose(1, 2)
        return torch.cat([prefix, patches], dim=1) if num_prefix_tokens else patches


class PegConfig(ComponentConfig):
    """CPVT positional encoding generator: a depthwise conv over the patch grid, added residually."""

    type: Literal["peg"] = "peg"
    kernel_size: PositiveInt = 3

    def check(self, spatial_dims: int = 2, **_: Any) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise SpecValueError(
                "kernel_size", f"must be a positive odd integer, got {self.kernel_size}"
            )
        if spatial_dims != 2:
            raise SpecValueError("type", "peg works on 2D patch grids (images) only")


class PegPositions(nn.Module):
    """Posenc interface around :class:`PEG`: ``forward(tokens, grid, num_prefix_tokens)``."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.peg = PEG(dim, kernel_size)

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, ...], num_prefix_tokens: int
    ) -> torch.Tensor:
        return self.peg.forward_tokens(tokens, grid, num_prefix_tokens)


def build_peg(config: PegConfig, ctx: BuildContext) -> PegPositions:
    """Positional encoding generator (depthwise conv, CPVT / Twins)."""
    return PegPositions(ctx.dim, config.kernel_size)


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Replace, in place, every sub-module that has a ``fuse()`` method by its fused form.

    Used for inference: conv/linear + BatchNorm pairs (:class:`ConvNormAct`, LeViT's
    ``LinearBN``) become single biased layers with identical eval-mode outputs.
    """
    for name, child in list(module.named_children()):
        if hasattr(child, "fuse") and callable(child.fuse):
            setattr(module, name, child.fuse())
        else:
            fuse_batchnorm(child)
    return module
