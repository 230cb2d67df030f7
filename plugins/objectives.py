"""Built-in plugin `objectives`: supervised, DeiT distillation, MAE, SimMIM, MPP, MP3, DINO, EsViT.

Every objective talks to the model only through the public protocol (``embed``/``encode``/
``num_prefix_tokens``/``patch`` for flat token models; ``forward_features``/``forward_head`` for
any model), which is why they work on every registered backbone with the needed capability instead
of one ViT class. The contract is described in :mod:`vitzoo.objectives`; shared maths (masking,
pixel targets, EMA) is in :mod:`vitzoo.objectives.masking`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from vitzoo_plugins._catalogue import register_catalogue_presets

from vitzoo import ComponentConfig, SpecValueError, hookimpl
from vitzoo.components.attention import MhsaConfig
from vitzoo.components.block import PreNormBlockConfig
from vitzoo.components.context import BuildContext
from vitzoo.components.examples import TINY_VIT
from vitzoo.components.layers import init_vit_weights
from vitzoo.components.mlp import MlpConfig
from vitzoo.components.posenc import sincos_table
from vitzoo.config import (
    FiniteFloat,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Rate,
)
from vitzoo.objectives import Objective, ObjectiveConfig, ObjectiveOutput
from vitzoo.objectives.base import make_output
from vitzoo.objectives.masking import (
    effective_patch_size,
    ema_update,
    gather_tokens,
    masked_mean,
    normalise_patches,
    patchify_pixels,
    random_split,
)

#: The distillation example's teacher: the shared tiny ViT, one block deep.
TINY_TEACHER = {"type": "vit", **TINY_VIT, "depth": 1}


# ============================================================================================
# Shared helpers
# ============================================================================================
def as_outputs(output: Any) -> list[torch.Tensor]:
    """A model's output as a list: one logits tensor, or (cls, dist) from a distillation head."""
    return list(output) if isinstance(output, tuple | list) else [output]


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


class IncompatibleModelError(ValueError):
    """The model cannot serve this objective (found when the objective first runs it)."""


def require_images(model: nn.Module, objective: str) -> None:
    if len(getattr(model, "input_size", ())) != 3:
        raise ValueError(
            f"objective.type: {objective!r} works on image models (C, H, W); this model's "
            f"input_size is {getattr(model, 'input_size', None)}"
        )


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=-1) == targets).float().mean()


# ============================================================================================
# supervised
# ============================================================================================
class SupervisedConfig(ObjectiveConfig):
    """Cross-entropy with label smoothing; optional mixup / cutmix (one of them per batch)."""

    type: Literal["supervised"] = "supervised"
    label_smoothing: Rate = Field(0.1, ge=0.0, lt=1.0)
    mixup_alpha: NonNegativeFloat = Field(0.0, ge=0.0)
    cutmix_alpha: NonNegativeFloat = Field(0.0, ge=0.0)
    mix_prob: Probability = Field(1.0, ge=0.0, le=1.0)


def mix_batch(
    images: torch.Tensor, targets: torch.Tensor, config: SupervisedConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) with a shuffled copy of the batch.

    Returns ``(images, targets_a, targets_b, lam)``: the loss is
    ``lam * CE(targets_a) + (1 - lam) * CE(targets_b)``.
    """
    alphas = [a for a in (config.mixup_alpha, config.cutmix_alpha) if a > 0]
    if not alphas or torch.rand(()) >= config.mix_prob:
        return images, targets, targets, 1.0
    use_cutmix = config.cutmix_alpha > 0 and (config.mixup_alpha == 0 or bool(torch.rand(()) < 0.5))
    alpha = config.cutmix_alpha if use_cutmix else config.mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(images.shape[0], device=images.device)
    if not use_cutmix:
        return lam * images + (1 - lam) * images[perm], targets, targets[perm], lam
    h, w = images.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    return mixed, targets, targets[perm], lam


class SupervisedObjective(Objective):
    """Classification. A two-output (distillation-head) model has both outputs trained on labels.

    ``class_weights`` (one per class; ``vitzoo train`` passes them for
    ``train.class_weights: balanced``) weight each sample's cross-entropy by its class; they
    follow the module across devices but are not saved (the data decides them).
    """

    def __init__(
        self,
        model: nn.Module,
        config: SupervisedConfig,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(model)
        self.config = config
        self.class_weights: torch.Tensor | None
        weights = None if class_weights is None else torch.as_tensor(class_weights).float()
        self.register_buffer("class_weights", weights, persistent=False)

    def classification_loss(
        self, logits: torch.Tensor, targets_a: torch.Tensor, targets_b: torch.Tensor, lam: float
    ) -> torch.Tensor:
        smoothing = self.config.label_smoothing
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        loss = F.cross_entropy(logits, targets_a, weight=weight, label_smoothing=smoothing)
        if lam < 1.0:
            loss = lam * loss + (1 - lam) * F.cross_entropy(
                logits, targets_b, weight=weight, label_smoothing=smoothing
            )
        return loss

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        if targets is None:
            raise ValueError("the supervised objective needs class targets")
        if self.training:
            images, t_a, t_b, lam = mix_batch(images, targets, self.config)
        else:
            t_a, t_b, lam = targets, targets, 1.0
        outputs = as_outputs(self.model(images))
        loss = sum(self.classification_loss(o, t_a, t_b, lam) for o in outputs) / len(outputs)
        return make_output(loss, accuracy=accuracy(outputs[0].detach(), targets))


def build_supervised(config: SupervisedConfig, ctx: BuildContext) -> SupervisedObjective:
    """Cross-entropy classification with label smoothing and optional mixup/cutmix."""
    return SupervisedObjective(ctx.extra["model"], config, ctx.extra.get("class_weights"))


# ============================================================================================
# distillation (DeiT)
# ============================================================================================
class TeacherSource(ComponentConfig):
    """Where the teacher comes from: exactly one of a preset name, a spec mapping, a checkpoint."""

    preset: str | None = None
    spec: dict[str, Any] | None = None
    checkpoint: str | None = None
    #: Spec overrides applied to a preset or spec teacher, e.g. ``{"num_classes": 10}``.
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _exactly_one(self) -> TeacherSource:
        given = [n for n in ("preset", "spec", "checkpoint") if getattr(self, n) is not None]
        if len(given) != 1:
            raise SpecValueError(
                "teacher",
                f"give exactly one of preset, spec, checkpoint (got {given or 'none'})",
            )
        if self.checkpoint is not None and self.overrides:
            raise SpecValueError("overrides", "a checkpoint teacher cannot take spec overrides")
        return self

    def nested_specs(self) -> dict[str, tuple[Any, dict[str, Any]]]:
        """The spec this teacher is built from (field -> (source, overrides)), so validating the
        student's spec validates the teacher's too (see :mod:`vitzoo.compat`)."""
        if self.spec is not None:
            return {"spec": (self.spec, self.overrides)}
        if self.preset is not None:
            return {"preset": (self.preset, self.overrides)}
        return {}


class DistillationConfig(SupervisedConfig):
    """DeiT distillation (Touvron et al. 2021): labels + a frozen teacher's soft or hard targets."""

    type: Literal["distillation"] = "distillation"  # type: ignore[assignment]
    teacher: TeacherSource
    #: "hard": CE against the teacher's argmax (DeiT's best); "soft": KL at ``temperature``.
    kind: Literal["hard", "soft"] = "hard"
    alpha: Probability = Field(0.5, ge=0.0, le=1.0)
    temperature: PositiveFloat = Field(3.0, gt=0.0)


def build_teacher(source: TeacherSource, system: Any) -> nn.Module:
    """Build (or load) the teacher described by ``source`` through the normal spec machinery."""
    from vitzoo.builder import build
    from vitzoo.checkpoint import load

    if source.checkpoint is not None:
        return load(source.checkpoint, system=system)
    spec = source.preset if source.preset is not None else source.spec
    return build(spec, system=system, **source.overrides)


class DistillationObjective(SupervisedObjective):
    """The teacher is held outside the module tree, so it is neither trained nor saved."""

    def __init__(
        self,
        model: nn.Module,
        config: DistillationConfig,
        teacher: nn.Module,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(model, config, class_weights)
        teacher_classes = getattr(teacher, "num_classes", None)
        student_classes = getattr(model, "num_classes", None)
        if None not in (teacher_classes, student_classes) and teacher_classes != student_classes:
            raise ValueError(
                f"objective.teacher: the teacher predicts {teacher_classes} classes but the "
                f"student predicts {student_classes}; set teacher.overrides.num_classes"
            )
        teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a registered submodule

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> DistillationObjective:
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)  # .to() / .half() move the teacher along
        return self

    def frozen_parameters(self) -> Any:
        return iter(list(super().frozen_parameters()) + list(self.teacher.parameters()))

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        if targets is None:
            raise ValueError("the distillation objective needs class targets")
        config: DistillationConfig = self.config  # type: ignore[assignment]
        if self.training:
            images, t_a, t_b, lam = mix_batch(images, targets, config)
        else:
            t_a, t_b, lam = targets, targets, 1.0
        outputs = as_outputs(self.model(images))
        cls_logits, dist_logits = outputs[0], outputs[-1]  # a plain head distils its only output
        with torch.no_grad():
            teacher_logits = as_outputs(self.teacher(images))[0].float()
        base = self.classification_loss(cls_logits, t_a, t_b, lam)
        if config.kind == "hard":
            distil = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=-1))
        else:
            tau = config.temperature
            distil = F.kl_div(
                F.log_softmax(dist_logits / tau, dim=-1),
                F.log_softmax(teacher_logits / tau, dim=-1),
                reduction="batchmean",
                log_target=True,
            ) * (tau * tau)
        loss = (1 - config.alpha) * base + config.alpha * distil
        return make_output(
            loss,
            accuracy=accuracy(cls_logits.detach(), targets),
            teacher_agreement=accuracy(dist_logits.detach(), teacher_logits.argmax(dim=-1)),
            label_loss=base,
            distillation_loss=distil,
        )


def build_distillation(config: DistillationConfig, ctx: BuildContext) -> DistillationObjective:
    """DeiT distillation from a frozen teacher (hard or soft)."""
    teacher = ctx.extra.get("teacher")
    if teacher is None:
        teacher = build_teacher(config.teacher, ctx.extra.get("system"))
    return DistillationObjective(
        ctx.extra["model"], config, teacher, ctx.extra.get("class_weights")
    )


# ============================================================================================
# Masked-image objectives on flat token models
# ============================================================================================
class TokenObjective(Objective):
    """Base for objectives that use ``embed``/``encode`` of a flat token model."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__(model)
        require_images(model, name)
        self.name = name
        self.patch_size = effective_patch_size(model)
        self.grid = tuple(model.patch.grid_for(tuple(model.input_size[1:])))  # type: ignore[union-attr,operator]
        self.num_patches = math.prod(self.grid)
        self.dim = int(model.num_features)  # type: ignore[arg-type]
        self.pixel_dim = math.prod(self.patch_size) * int(model.input_size[0])  # type: ignore[index]
        #: Tokens the encoder saw in the last forward (prefix included); MAE shows it shrink.
        self.last_encoder_tokens = 0

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prefix, patch tokens): patch tokens are the last ``num_patches`` in grid order.

        Counted from the end because a model may add prefix tokens inside ``encode`` (CaiT's
        late class token), so ``num_prefix_tokens`` describes the encoder output, not ``embed``.
        """
        n = tokens.shape[1] - self.num_patches
        return tokens[:, :n], tokens[:, n:]

    def encode(
        self, tokens: torch.Tensor, num_patches: int, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``model.encode``, checked to return one token per patch given (after its prefix).

        Per-patch objectives cannot work on encoders that merge or drop tokens (ATS, patch
        merger); they fail here with the reason instead of a shape error further on.
        """
        self.last_encoder_tokens = tokens.shape[1]
        encoded = self.model.encode(tokens, mask=mask)  # type: ignore[operator]
        prefix = int(self.model.num_prefix_tokens)  # type: ignore[arg-type]
        if encoded.shape[1] != num_patches + prefix:
            raise IncompatibleModelError(
                f"objective.type: {self.name!r} predicts one output per patch, but "
                f"{type(self.model).__name__}.encode returned {encoded.shape[1]} tokens for "
                f"{num_patches} patches + {prefix} prefix tokens (it drops or merges tokens); "
                "tag such architectures 'drops-tokens' so specs reject the pair"
            )
        return encoded


# ----- MAE -----------------------------------------------------------------------------------
class MaeConfig(ObjectiveConfig):
    """MAE (He et al. 2021): encode visible patches only, reconstruct masked pixels with a decoder."""

    type: Literal["mae"] = "mae"
    requires_any: ClassVar[frozenset[str]] = frozenset({"tokens"})
    excludes: ClassVar[frozenset[str]] = frozenset({"drops-tokens"})
    mask_ratio: Rate = Field(0.75, ge=0.0, lt=1.0)
    decoder_dim: PositiveInt = Field(512, ge=1)
    decoder_depth: PositiveInt = Field(8, ge=1)
    decoder_heads: PositiveInt = Field(16, ge=1)
    #: Per-patch normalised pixel targets (the paper's better-performing variant).
    norm_pix_loss: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> MaeConfig:
        if self.decoder_dim % self.decoder_heads:
            raise SpecValueError(
                "decoder_heads",
                f"decoder_heads={self.decoder_heads} does not divide decoder_dim={self.decoder_dim}",
            )
        return self


def transformer_stack(ctx: BuildContext, dim: int, depth: int, heads: int) -> nn.ModuleList:
    """``depth`` standard pre-norm blocks built from the registered core components."""
    block_ctx = ctx.replace(dim=dim, num_heads=heads, attention=MhsaConfig(), mlp=MlpConfig())
    return nn.ModuleList(
        block_ctx.build("block", PreNormBlockConfig(), layer_index=i) for i in range(depth)
    )


class MaeObjective(TokenObjective):
    def __init__(self, model: nn.Module, config: MaeConfig, ctx: BuildContext) -> None:
        super().__init__(model, "mae")
        self.config = config
        d = config.decoder_dim
        self.enc_to_dec = nn.Linear(self.dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer(
            "decoder_pos", sincos_table(self.grid, d, temperature=10000.0), persistent=False
        )
        self.decoder = transformer_stack(ctx, d, config.decoder_depth, config.decoder_heads)
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.to_pixels = nn.Linear(d, self.pixel_dim)
        for module in (self.enc_to_dec, self.decoder, self.decoder_norm, self.to_pixels):
            module.apply(init_vit_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        tokens, _ = self.model.embed(images)  # type: ignore[operator]
        prefix, patches = self.split(tokens)
        batch, n, _ = patches.shape
        keep, masked, restore = random_split(batch, n, self.config.mask_ratio, images.device)
        visible = gather_tokens(patches, keep)
        encoded = self.encode(torch.cat([prefix, visible], dim=1), visible.shape[1])

        x = self.enc_to_dec(encoded)
        p = x.shape[1] - keep.shape[1]  # prefix tokens after encoding (CaiT adds its cls there)
        visible = x[:, p:]
        fill = self.mask_token.expand(batch, n - visible.shape[1], -1).to(x.dtype)
        full = gather_tokens(torch.cat([visible, fill], dim=1), restore) + self.decoder_pos
        x = torch.cat([x[:, :p], full], dim=1)
        for block in self.decoder:
            x = block(x)
        pred = self.to_pixels(self.decoder_norm(x)[:, p:])

        target = patchify_pixels(images, self.patch_size)  # type: ignore[arg-type]
        if self.config.norm_pix_loss:
            target = normalise_patches(target)
        loss = masked_mean((pred - target).pow(2).mean(dim=-1), masked)
        return make_output(loss, encoder_tokens=float(self.last_encoder_tokens))


def build_mae(config: MaeConfig, ctx: BuildContext) -> MaeObjective:
    """Masked autoencoder pre-training (He et al. 2021)."""
    return MaeObjective(ctx.extra["model"], config, ctx)


# ----- SimMIM --------------------------------------------------------------------------------
class SimMimConfig(ObjectiveConfig):
    """SimMIM (Xie et al. 2022): mask tokens in the encoder, linear pixel head, L1 on masked patches.

    Masking is at the model's token granularity (the paper masks 32x32 blocks of a patch-16 ViT).
    """

    type: Literal["simmim"] = "simmim"
    requires_any: ClassVar[frozenset[str]] = frozenset({"tokens"})
    excludes: ClassVar[frozenset[str]] = frozenset({"drops-tokens"})
    mask_ratio: Rate = Field(0.6, gt=0.0, lt=1.0)


class SimMimObjective(TokenObjective):
    def __init__(self, model: nn.Module, config: SimMimConfig) -> None:
        super().__init__(model, "simmim")
        self.config = config
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.to_pixels = nn.Linear(self.dim, self.pixel_dim)
        self.to_pixels.apply(init_vit_weights)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        batch = images.shape[0]
        _, masked, _ = random_split(batch, self.num_patches, self.config.mask_ratio, images.device)

        def put_mask_tokens(patches: torch.Tensor) -> torch.Tensor:
            return torch.where(masked.unsqueeze(-1), self.mask_token.to(patches.dtype), patches)

        tokens, _ = self.model.embed(images, patch_transform=put_mask_tokens)  # type: ignore[operator]
        encoded = self.encode(tokens, self.num_patches)
        pred = self.to_pixels(self.split(encoded)[1])
        target = patchify_pixels(images, self.patch_size)  # type: ignore[arg-type]
        loss = masked_mean((pred - target).abs().mean(dim=-1), masked)
        return make_output(loss)


def build_simmim(config: SimMimConfig, ctx: BuildContext) -> SimMimObjective:
    """SimMIM masked image modelling (Xie et al. 2022)."""
    return SimMimObjective(ctx.extra["model"], config)


# ----- MPP -----------------------------------------------------------------------------------
class MppConfig(ObjectiveConfig):
    """Masked patch prediction (ViT paper, App. B.1.2): predict corrupted patches' binned colour.

    ``mask_prob`` of the patches are corrupted: a mask embedding (80%), another patch's embedding
    (10%) or left unchanged (10%); each is classified into 2^(bits*C) mean colours.
    """

    type: Literal["mpp"] = "mpp"
    requires_any: ClassVar[frozenset[str]] = frozenset({"tokens"})
    excludes: ClassVar[frozenset[str]] = frozenset({"drops-tokens"})
    mask_prob: Rate = Field(0.5, gt=0.0, lt=1.0)
    mask_token_prob: Probability = Field(0.8, ge=0.0, le=1.0)
    random_token_prob: Probability = Field(0.1, ge=0.0, le=1.0)
    bits: PositiveInt = Field(3, ge=1, le=8)
    #: The range pixel values are binned over (images normalised otherwise need their range).
    pixel_range: tuple[FiniteFloat, FiniteFloat] = (0.0, 1.0)

    @model_validator(mode="after")
    def _probabilities(self) -> MppConfig:
        if self.mask_token_prob + self.random_token_prob > 1.0:
            raise SpecValueError(
                "random_token_prob", "mask_token_prob + random_token_prob must be <= 1"
            )
        if self.pixel_range[0] >= self.pixel_range[1]:
            raise SpecValueError("pixel_range", "must be (low, high) with low < high")
        return self


def mean_colour_classes(
    patches: torch.Tensor, channels: int, bits: int, low: float, high: float
) -> torch.Tensor:
    """(B, N, P*C) pixel patches -> (B, N) class index of the binned mean colour."""
    b, n, _ = patches.shape
    mean = patches.reshape(b, n, -1, channels).mean(dim=2)
    levels = 2**bits
    bins = ((mean - low) / (high - low) * levels).floor().clamp(0, levels - 1).long()
    weights = levels ** torch.arange(channels, device=patches.device)
    return (bins * weights).sum(dim=-1)


class MppObjective(TokenObjective):
    def __init__(self, model: nn.Module, config: MppConfig) -> None:
        super().__init__(model, "mpp")
        self.config = config
        self.channels = int(model.input_size[0])  # type: ignore[index]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.to_colour = nn.Linear(self.dim, 2 ** (config.bits * self.channels))
        self.to_colour.apply(init_vit_weights)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        config = self.config
        batch, n = images.shape[0], self.num_patches
        _, corrupted, _ = random_split(batch, n, config.mask_prob, images.device)
        draw = torch.rand(batch, n, device=images.device)
        use_mask = corrupted & (draw < config.mask_token_prob)
        use_random = (
            corrupted & ~use_mask & (draw < config.mask_token_prob + config.random_token_prob)
        )

        def corrupt(patches: torch.Tensor) -> torch.Tensor:
            flat = patches.reshape(-1, patches.shape[-1])
            others = flat[torch.randint(flat.shape[0], (batch, n), device=patches.device)]
            patches = torch.where(
                use_mask.unsqueeze(-1), self.mask_token.to(patches.dtype), patches
            )
            return torch.where(use_random.unsqueeze(-1), others, patches)

        tokens, _ = self.model.embed(images, patch_transform=corrupt)  # type: ignore[operator]
        logits = self.to_colour(self.split(self.encode(tokens, n))[1])
        pixels = patchify_pixels(images, self.patch_size)  # type: ignore[arg-type]
        classes = mean_colour_classes(pixels, self.channels, config.bits, *config.pixel_range)
        loss = F.cross_entropy(logits[corrupted], classes[corrupted])
        return make_output(loss, accuracy=accuracy(logits[corrupted].detach(), classes[corrupted]))


def build_mpp(config: MppConfig, ctx: BuildContext) -> MppObjective:
    """Masked patch prediction of binned mean colours (Dosovitskiy et al. 2021)."""
    return MppObjective(ctx.extra["model"], config)


# ----- MP3 -----------------------------------------------------------------------------------
class Mp3Config(ObjectiveConfig):
    """MP3 (Zhai et al. 2022): predict each patch's position from content, without position input.

    Every patch is a query but only the unmasked ``1 - mask_ratio`` are keys/values (a key
    padding mask), so the task cannot be solved by matching neighbours' content alone.
    """

    type: Literal["mp3"] = "mp3"
    requires_any: ClassVar[frozenset[str]] = frozenset({"tokens"})
    excludes: ClassVar[frozenset[str]] = frozenset({"drops-tokens"})
    mask_ratio: Rate = Field(0.75, ge=0.0, lt=1.0)


class Mp3Objective(TokenObjective):
    def __init__(self, model: nn.Module, config: Mp3Config) -> None:
        super().__init__(model, "mp3")
        self.config = config
        self.to_position = nn.Sequential(
            nn.LayerNorm(self.dim), nn.Linear(self.dim, self.num_patches)
        )
        self.to_position.apply(init_vit_weights)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> ObjectiveOutput:
        tokens, _ = self.model.embed(images, positions=False)  # type: ignore[operator]
        batch, n = tokens.shape[0], self.num_patches
        _, masked, _ = random_split(batch, n, self.config.mask_ratio, images.device)
        prefix = torch.ones(batch, tokens.shape[1] - n, dtype=torch.bool, device=images.device)
        keys = torch.cat([prefix, ~masked], dim=1)  # True = may be attended to
        logits = self.to_position(self.split(self.encode(tokens, n, mask=keys))[1])
        positions = torch.arange(n, device=images.device).expand(batch, n)
        loss = F.cross_entropy(logits.reshape(batch * n, n), positions.reshape(-1))
        return make_output(loss, accuracy=accuracy(logits.detach(), positions))


def build_mp3(config: Mp3Config, ctx: BuildContext) -> Mp3Objective:
    """Masked position prediction (Zhai et al. 2022)."""
    return Mp3Objective(ctx.extra["model"], config)


# ============================================================================================
# DINO and EsViT (self-distillation with an EMA teacher)
# ============================================================================================
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
    global_crops: PositiveInt = Field(2, ge=1)
    local_crops: NonNegativeInt = Field(8, ge=0)
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

    def __init__(self, model: nn.Module, config: DinoConfig) -> None:
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
            parts = [r.chunk(len(members)) for r in result] if isinstance(result, tuple) else None
            for j, i in enumerate(members):
                out[i] = tuple(p[j] for p in parts) if parts else result.chunk(len(members))[j]
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


def build_dino(config: DinoConfig, ctx: BuildContext) -> DinoObjective:
    """DINO self-distillation with an EMA teacher, centring and multi-crop (Caron et al. 2021)."""
    return DinoObjective(ctx.extra["model"], config)


class EsVitConfig(DinoConfig):
    """EsViT (Li et al. 2022): DINO's view-level loss plus a region-level matching loss.

    Each student region (feature-map location or patch token) is matched to its most similar
    teacher region of another view (cosine on backbone features) and trained on that region's
    teacher distribution. Works on hierarchical feature maps and flat patch tokens.
    """

    type: Literal["esvit"] = "esvit"  # type: ignore[assignment]
    requires_any: ClassVar[frozenset[str]] = frozenset({"tokens", "feature-maps"})
    region_weight: NonNegativeFloat = Field(1.0, ge=0.0)


class EsVitObjective(DinoObjective):
    def __init__(self, model: nn.Module, config: EsVitConfig) -> None:
        super().__init__(model, config)
        dim = int(model.num_features)  # type: ignore[arg-type]
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


def build_esvit(config: EsVitConfig, ctx: BuildContext) -> EsVitObjective:
    """EsViT view- and region-level self-distillation (Li et al. 2022)."""
    return EsVitObjective(ctx.extra["model"], config)


# ============================================================================================
# Registration
# ============================================================================================
SSL_HEAD = {"config": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "local_crops": 2}}


@hookimpl
def register_objectives(register: Any) -> None:
    register(
        "supervised",
        build_supervised,
        SupervisedConfig,
        tags={"supervised"},
        example={"config": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}},
    )
    register(
        "distillation",
        build_distillation,
        DistillationConfig,
        tags={"supervised", "teacher"},
        example={"config": {"teacher": {"spec": {"model": TINY_TEACHER}}}},
    )
    register(
        "mae",
        build_mae,
        MaeConfig,
        tags={"self-supervised", "masked-image"},
        needs={"image", "tokens", "fixed-grid"},
        example={"config": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}},
    )
    register(
        "simmim",
        build_simmim,
        SimMimConfig,
        tags={"self-supervised", "masked-image"},
        needs={"image", "tokens", "fixed-grid"},
    )
    register(
        "mpp",
        build_mpp,
        MppConfig,
        tags={"self-supervised", "masked-image"},
        needs={"image", "tokens", "fixed-grid"},
    )
    register(
        "mp3",
        build_mp3,
        Mp3Config,
        tags={"self-supervised", "needs-mask"},
        needs={"image", "tokens", "fixed-grid"},
    )
    register(
        "dino",
        build_dino,
        DinoConfig,
        tags={"self-supervised", "ema"},
        needs={"image"},
        summary=(
            "DINO (Caron et al. 2021); paper-size head by default (out_dim 65536, hidden "
            "2048: ~22M "
            "parameters, twice with the EMA teacher): set out_dim/hidden_dim/bottleneck_dim "
            "small for a small model"
        ),
        example=SSL_HEAD,
    )
    register(
        "esvit",
        build_esvit,
        EsVitConfig,
        tags={"self-supervised", "ema"},
        needs={"image"},
        summary=(
            "EsViT (Li et al. 2022); paper-size head by default (out_dim 65536, hidden "
            "2048: ~22M "
            "parameters, twice with the EMA teacher): set out_dim/hidden_dim/bottleneck_dim "
            "small for a small model"
        ),
        example=SSL_HEAD,
    )


@hookimpl
def register_presets(register: Any) -> None:
    """Objective presets: a model and the paper's pre-training objective (MAE's decoder)."""
    register_catalogue_presets(register, "objectives")
