"""Modules that read the token grid at forward time, so a ViT can change it per call.

A grid-aware part (window attention, spatial-reduction attention, XCiT's local patch
interaction, ...) is built for the patch grid of ``image_size``. With ``dynamic_img_size`` a ViT
accepts other input sizes without rebuilding: before its blocks run it hands every part marked
:class:`FollowsGrid` the grid of the current input. Parts whose parameters depend on the grid
(a learned token per window, groups fixed at build) cannot follow; their configs refuse
``dynamic_img_size`` at spec time and :func:`grid_followers` names any that slip through.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class FollowsGrid:
    """Mixin: the module works on any grid given to :meth:`follow_grid` before its forward."""

    #: Subclasses whose build-time state depends on the grid set this to False.
    follows_grid: bool = True
    grid: tuple[int, ...]

    def follow_grid(self, grid: Sequence[int]) -> None:
        self.grid = tuple(grid)


def refuse_dynamic_grid(what: str, dynamic_img_size: bool) -> None:
    """Spec-time rule of grid-bound parts: they cannot take ``dynamic_img_size``."""
    if dynamic_img_size:
        from vitzoo.config import SpecValueError

        raise SpecValueError(
            "type",
            f"{what} is fitted to the build-time patch grid and cannot follow a changing input "
            "size; set dynamic_img_size: false and call set_input_size(...) for another size",
        )


def grid_followers(module: nn.Module, skip: Sequence[nn.Module] = ()) -> list[nn.Module]:
    """Every :class:`FollowsGrid` part of ``module``; raises naming the grid-bound ones.

    ``skip``: subtrees that take the grid as a forward argument (positional encodings).
    """
    skipped = {id(m) for s in skip for m in s.modules()}
    followers, fixed = [], []
    for name, sub in module.named_modules():
        if sub is module or id(sub) in skipped or not hasattr(sub, "grid"):
            continue
        if getattr(sub, "follows_grid", False):
            followers.append(sub)
        else:
            fixed.append(f"{name} ({type(sub).__name__})")
    if fixed:
        raise ValueError(
            "dynamic_img_size needs every grid-aware part to follow the input's grid; these are "
            f"built for one grid: {fixed}; use set_input_size(...) instead"
        )
    return followers
