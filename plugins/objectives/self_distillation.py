"""Self-distillation with an EMA teacher: DINO and EsViT.

A student (the model plus projection heads) learns to match a frozen teacher -- the exponential
moving average of the student, updated in ``after_step`` -- across random crops of each image.
They read the model only through ``forward_features``/``forward_head``, so flat token models
and hierarchical feature-map models both work.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from vitzoo_plugins.objectives.images import require_images

from vitzoo import SpecValueError
from vitzoo.components.layers import init_vit_weights
from vitzoo.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability
from vitzoo.objectives import Objective, ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from vitzoo.objectives.base import make_output
from vitzoo.objectives.masking import ema_update, gather_tokens


def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, num_features) pre-logits features of any vitzoo model."""
    return model.forward_head(model.forward_features(images), pre_logits=True)  # type: ignore[operator]


def dense_and_pooled(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-location features (B, M, C) and pooled features (B, C) from one forward pass.

    Hierarchical models give a (B, C, H, W) map (flattened here); flat token models give their
    patch tokens (prefix tokens dropped).
    """
    feats = model.forward_features(images)  # type: ignore[operator]
    pooled = model.forward_head(feats, pre_logits=True)  # type: ignore[operator]
    if feats.ndim == 4:
        dense = feats.flatten(2).transpose(1, 2)
    else:
        dense = feats[:, int(getattr(model, "num_prefix_tokens", 0)) :]
    return dense, pooled


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class DinoConfig(ObjectiveConfig):
    """DINO (Caron et al. 2021): a student matches an EMA teacher's centred, sharpened outputs.

    Views: ``global_crops`` crops (teacher and student) and ``local_crops`` (student only), cut by
    random resized crop + horizontal flip from each image. Colour augmentations are left to the
    data pipeline. ``local_crop_size`` None means the model's input size.
    """

    type: Literal["dino"] = "dino"
    out_dim: PositiveInt = Field(65536, ge=2)
    hidden_dim: PositiveInt = Field(2048, ge=1)
    bottleneck_dim: PositiveInt = Field(256, ge=1)
    head_layers: PositiveInt = Field(3, ge=1)
    norm_last_layer: bool = True
    student_temp: PositiveFloat = Field(0.1, gt=0.0)
    teacher_temp: PositiveFloat = Field(0.04, gt=0.0)
    center_momentum: Probability = Field(0.9, ge=0.0, lt=1.0)
    teacher_momentum: Probability = Field(0.996, ge=0.0, le=1.0)
    #: views per image are bounded: each is a forward pass, and the papers use at most 2 + 10
    global_crops: PositiveInt = Field(2, ge=1, le=16)
    local_crops: NonNegativeInt = Field(8, ge=0, le=64)
    global_crop_scale: tuple[PositiveFloat, PositiveFloat] = (0.4, 1.0)
    local_crop_scale: tuple[PositiveFloat, PositiveFloat] = (0.05, 0.4)
    local_crop_size: PositiveInt | None = None

    @model_validator(mode="after")
    def _views(self) -> DinoConfig:
        if self.global_crops + self.local_crops < 2:
            raise SpecValueError("local_crops", "DINO needs at least two views in total")
        for name in ("global_crop_scale", "local_crop_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise SpecValueError(name, "must be (low, high) with 0 < low <= high <= 1")
        return self


class ProjectionHead(nn.Module):
    """DINO head: MLP -> bottleneck -> L2 norm -> (weight-normalised) linear to ``out_dim``."""

    def __init__(self, in_dim: int, config: DinoConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(config.head_layers - 1):
            layers += [nn.Linear(width, config.hidden_dim), nn.GELU()]
            width = config.hidden_dim
        layers.append(nn.Linear(width, config.bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(config.out_dim, config.bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        self.normalise_prototypes = config.norm_last_layer
        self.mlp.apply(init_vit_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        weight = self.prototypes
        if self.normalise_prototypes:  # weight norm with its gain fixed at 1
            weight = F.normalize(weight, dim=-1)
        return F.linear(x, weight)


def random_resized_crops(
    images: torch.Tensor, scale: tuple[float, float], size: tuple[int, int]
) -> torch.Tensor:
    """One random resized crop (area in ``scale``, aspect in [3/4, 4/3]) + flip per image."""
    b, _, h, w = images.shape
    crops = []
    for i in range(b):
        area = h * w * float(torch.empty(()).uniform_(*scale))
        aspect = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3))))
        ch = max(1, min(h, round(math.sqrt(area / aspect))))
        cw = max(1, min(w, round(math.sqrt(area * aspect))))
        y = int(torch.randint(h - ch + 1, ()))
        x = int(torch.randint(w - cw + 1, ()))
        crop = images[i : i + 1, :, y : y + ch, x : x + cw]
        crop = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)
        if bool(torch.rand(()) < 0.5):
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.cat(crops)


class DinoObjective(Objective):
    """Student = the model + a projection head; teacher = their EMA (frozen, updated in after_step)."""

    def __init__(self, config: DinoConfig, octx: ObjectiveContext) -> None:
        model = octx.model
        super().__init__(model)
        require_images(model, config.type)
        self.config = config
        dim = int(model.num_features)  # type: ignore[arg-type]
        self.head = ProjectionHead(dim, config)
        self.teacher_model = copy.deepcopy(model).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, config.out_dim))
        self._pending: dict[str, torch.Tensor] = {}
        size = tuple(model.input_size[1:])  # type: ignore[index]
        self.global_size = size
        local = config.local_crop_size
        self.local_size = size if local is None else (local, local)

    def train(self, mode: bool = True) -> DinoObjective:
        super().train(mode)
        self.teacher_model.eval()  # the teacher never uses dropout / drop-path
        self.teacher_head.eval()
        return self

    # -- views ------------------------------------------------------------------------------
    def make_views(self, images: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        """Global views first. A list is taken as ready-made views (from a data pipeline)."""
        if isinstance(images, list | tuple):
            return list(images)
        c = self.config
        views = [
            random_resized_crops(images, c.global_crop_scale, self.global_size)
            for _ in range(c.global_crops)
        ]
        views += [
            random_resized_crops(images, c.local_crop_scale, self.local_size)
            for _ in range(c.local_crops)
        ]
        return views

    @staticmethod
    def by_size(views: list[torch.Tensor], fn: Callable[[torch.Tensor], Any]) -> list[Any]:
        """Apply ``fn`` to views concatenated per spatial size (one forward per resolution)."""
        out: list[Any] = [None] * len(views)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, v in enumerate(views):
            groups.setdefault(tuple(v.shape[1:]), []).append(i)
        for members in groups.values():
            result = fn(torch.cat([views[i] for i in members]))
            # split once per group (splitting per view made many crops quadratic)
            if isinstance(result, tuple):
                parts = [r.chunk(len(members)) for r in result]
                pieces: list[Any] = [tuple(p[j] for p in parts) for j in range(len(members))]
            else:
                pieces = list(result.chunk(len(members)))
            for j, i in enumerate(members):
                out[i] = pieces[j]
        return out

    # -- losses -----------------------------------------------------------------------------
    def teacher_probs(self, logits: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        return F.softmax((logits - center) / self.config.teacher_temp, dim=-1)

    def cross_view_loss(
        self, student: list[torch.Tensor], teacher: list[torch.Tensor]
    ) -> torch.Tensor:
        """Mean over (teacher view, other student view) pairs of H(teacher, student)."""
        total, terms = student[0].new_zeros(()), 0
        for t_index, probs in enumerate(teacher):
            for s_index, logits in enumerate(student):
                if s_index == t_index:
                    continue
                total = total + soft_cross_entropy(logits / self.config.student_temp, probs)
                terms += 1
        return total / terms

    def view_outputs(
        self, views: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n_global = self.config.global_crops
        student = [
            self.head(f) for f in self.by_size(views, lambda v: pooled_features(self.model, v))
        ]
        with torch.no_grad():
            teacher_raw = [
                self.teacher_head(f)
                for f in self.by_size(
                    views[:n_global], lambda v: pooled_features(self.teacher_model, v)
                )
            ]
        return student, teacher_raw

    def forward(
        self, images: torch.Tensor | list[torch.Tensor], targets: torch.Tensor | None = None
    ) -> ObjectiveOutput:
        views = self.make_views(images)
        student, teacher_raw = self.view_outputs(views)
        teacher = [self.teacher_probs(t, self.center) for t in teacher_raw]
        loss = self.cross_view_loss(student, teacher)
        self._pending["center"] = torch.cat(teacher_raw).mean(dim=0, keepdim=True)
        entropy = -(teacher[0] * teacher[0].clamp_min(1e-12).log()).sum(-1).mean()
        return make_output(loss, teacher_entropy=entropy)

    # -- the training-step hook ---------------------------------------------------------------
    @torch.no_grad()
    def after_step(self) -> None:
        """EMA teacher <- student; centre <- EMA of the last batch's teacher outputs."""
        m = self.config.teacher_momentum
        ema_update(self.teacher_model, self.model, m)
        ema_update(self.teacher_head, self.head, m)
        cm = self.config.center_momentum
        for name, batch_center in self._pending.items():
            buffer = getattr(self, name)
            buffer.mul_(cm).add_(batch_center, alpha=1 - cm)
        self._pending.clear()


class EsVitConfig(DinoConfig):
    """EsViT (Li et al. 2022): DINO's view-level loss plus a region-level matching loss.

    Each student region (feature-map location or patch token) is matched to its most similar
    teacher region of another view (cosine on backbone features) and trained on that region's
    teacher distribution. Works on hierarchical feature maps and flat patch tokens.
    """

    type: Literal["esvit"] = "esvit"  # type: ignore[assignment]
    region_weight: NonNegativeFloat = Field(1.0, ge=0.0)


class EsVitObjective(DinoObjective):
    def __init__(self, config: EsVitConfig, octx: ObjectiveContext) -> None:
        super().__init__(config, octx)
        dim = int(octx.model.num_features)  # type: ignore[arg-type]
        self.region_head = ProjectionHead(dim, config)
        self.teacher_region_head = copy.deepcopy(self.region_head).requires_grad_(False)
        self.register_buffer("region_center", torch.zeros(1, config.out_dim))

    def train(self, mode: bool = True) -> EsVitObjective:
        super().train(mode)
        self.teacher_region_head.eval()
        return self

    def region_loss(
        self,
        student_dense: list[torch.Tensor],
        student_logits: list[torch.Tensor],
        teacher_dense: list[torch.Tensor],
        teacher_probs: list[torch.Tensor],
    ) -> torch.Tensor:
        total, terms = student_logits[0].new_zeros(()), 0
        for t_index, (t_feat, t_probs) in enumerate(zip(teacher_dense, teacher_probs, strict=True)):
            t_norm = F.normalize(t_feat, dim=-1)
            for s_index, (s_feat, s_logits) in enumerate(
                zip(student_dense, student_logits, strict=True)
            ):
                if s_index == t_index:
                    continue
                with torch.no_grad():
                    sim = F.normalize(s_feat, dim=-1) @ t_norm.transpose(1, 2)
                    match = sim.argmax(dim=-1)  # (B, M_student) -> best teacher region
                    target = gather_tokens(t_probs, match)
                logp = F.log_softmax(s_logits / self.config.student_temp, dim=-1)
                total = total - (target * logp).sum(dim=-1).mean()
                terms += 1
        return total / terms

    def forward(
        self, images: torch.Tensor | list[torch.Tensor], targets: torch.Tensor | None = None
    ) -> ObjectiveOutput:
        config: EsVitConfig = self.config  # type: ignore[assignment]
        views = self.make_views(images)
        n_global = config.global_crops
        student = self.by_size(views, lambda v: dense_and_pooled(self.model, v))
        s_view = [self.head(pooled) for _, pooled in student]
        s_region = [self.region_head(dense) for dense, _ in student]
        with torch.no_grad():
            teacher = self.by_size(
                views[:n_global], lambda v: dense_and_pooled(self.teacher_model, v)
            )
            t_view_raw = [self.teacher_head(pooled) for _, pooled in teacher]
            t_region_raw = [self.teacher_region_head(dense) for dense, _ in teacher]
        view_loss = self.cross_view_loss(
            s_view, [self.teacher_probs(t, self.center) for t in t_view_raw]
        )
        region_loss = self.region_loss(
            [dense for dense, _ in student],
            s_region,
            [dense for dense, _ in teacher],
            [self.teacher_probs(t, self.region_center) for t in t_region_raw],
        )
        self._pending["center"] = torch.cat(t_view_raw).mean(dim=0, keepdim=True)
        self._pending["region_center"] = torch.cat(t_region_raw).flatten(0, 1).mean(0, keepdim=True)
        loss = view_loss + config.region_weight * region_loss
        return make_output(loss, view_loss=view_loss, region_loss=region_loss)

    @torch.no_grad()
    def after_step(self) -> None:
        ema_update(self.teacher_region_head, self.region_head, self.config.teacher_momentum)
        super().after_step()
