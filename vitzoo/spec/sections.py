"""The ``train:``, ``data:`` and ``weights:`` sections of a spec.

Plain pydantic models with defaults, so a spec without these sections still validates, and a
checkpoint's stored spec records exactly how its weights were trained. They live in the spec
layer (not in :mod:`vitzoo.training`) because every root spec includes them: validating a spec
must not import the trainer, and the trainer reads these sections rather than defining them.
They import nothing heavier than pydantic.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vitzoo.config import (
    FiniteFloat,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Rate,
    SpecValueError,
)
from vitzoo.formats import WeightFormat

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LoraSection(_Section):
    """``train.lora``: low-rank adapters (LoRA, Hu et al. 2021, arXiv:2106.09685) through
    Hugging Face ``peft`` (the ``lora`` extra) on the named linear layers; the rest of the
    backbone is frozen, the classifier trains. Checkpoints hold the merged weights (ordinary
    vitzoo checkpoints); ``save_adapter`` also writes the adapters alone."""

    rank: PositiveInt = Field(default=8, description="Rank r of each adapter.")
    alpha: PositiveFloat = Field(
        default=16.0, description="Scale: the update is (alpha / rank) * B @ A."
    )
    dropout: Rate = Field(default=0.0, description="Dropout on the adapters' input.")
    targets: tuple[str, ...] = Field(
        default=("qkv",),
        description="Last names of the linear layers to adapt (e.g. qkv, proj, fc1, fc2); a "
        "fused qkv projection is adapted as one layer, as peft does.",
    )
    save_adapter: bool = Field(
        default=False, description="Also write RUN/adapter.safetensors (adapters + config)."
    )

    @model_validator(mode="after")
    def _rules(self) -> LoraSection:
        if not self.targets or not all(isinstance(t, str) and t.strip() for t in self.targets):
            raise SpecValueError("targets", "name at least one linear layer, e.g. [qkv]")
        return self


#: ``train.freeze``: nothing, everything but the classifier, or all but the last N layers.
FreezeSetting = Literal["none", "backbone"] | NonNegativeInt


class TrainConfig(_Section):
    """Optimisation settings: AdamW with warmup + cosine decay, precision, fine-tuning source.

    The loss (and label smoothing) belongs to the ``objective:`` section, not here.
    """

    epochs: PositiveInt = Field(default=10, description="Passes over the training set.")
    batch_size: PositiveInt = Field(
        default=64, description="Global batch size (split across processes)."
    )
    lr: PositiveFloat = Field(default=1e-3, description="Peak learning rate, reached after warmup.")
    min_lr: NonNegativeFloat = Field(
        default=1e-5, description="Learning rate at the end of the cosine."
    )
    warmup_epochs: NonNegativeFloat = Field(
        default=1.0, description="Linear warmup length, in epochs."
    )
    weight_decay: NonNegativeFloat = Field(
        default=0.05, description="AdamW decay (not on norms/biases/pos)."
    )
    betas: tuple[Rate, Rate] = (0.9, 0.999)
    grad_clip: PositiveFloat | None = Field(
        default=1.0, description="Max gradient norm; null disables."
    )
    seed: NonNegativeInt = Field(default=0, description="Seeds init, data order and augmentation.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="bf16 = autocast; fp16 = autocast plus a dynamic gradient scaler.",
    )
    compile: bool = Field(default=False, description="Wrap the model in torch.compile.")
    grad_checkpointing: bool = Field(default=False, description="Recompute blocks in backward.")
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    init_from: str | None = Field(
        default=None,
        description="Fine-tune from this checkpoint: head reset for a new class count, "
        "learned positions resampled for a new image size.",
    )
    log_every: PositiveInt = Field(default=20, description="Steps between plain-text log lines.")
    accumulation_steps: PositiveInt = Field(
        default=1,
        description="Split every batch into this many micro-batches and sum their gradients "
        "before one optimiser step (same update, less activation memory).",
    )
    ema_decay: Rate | None = Field(
        default=None,
        description="Keep an exponential moving average of the weights (e.g. 0.999); it is "
        "what validation scores and best.safetensors holds. null disables.",
    )
    layer_decay: Annotated[PositiveFloat, Field(le=1.0)] | None = Field(
        default=None,
        description="Layer-wise learning-rate decay for fine-tuning (e.g. 0.75): layer l of L "
        "gets lr * decay**(L - l), the head the full rate. null disables.",
    )
    class_weights: Literal["none", "balanced"] = Field(
        default="none",
        description="'balanced': weight the loss of each class by N / (classes * count).",
    )
    strategy: Literal["ddp", "fsdp"] | None = Field(
        default=None,
        description="How the processes of a torchrun job share the model: 'ddp' keeps a full "
        "copy on each; 'fsdp' shards parameters, gradients and optimiser state across them "
        "(PyTorch FSDP2; run state written with torch.distributed.checkpoint). null: ddp "
        "under torchrun; one process needs neither.",
    )
    fsdp_cpu_offload: bool = Field(
        default=False,
        description="fsdp: keep the parameter, gradient and optimiser-state shards in host "
        "memory (the optimiser step runs on the CPU); only for models that do not fit.",
    )
    fsdp_reshard_after_forward: bool = Field(
        default=True,
        description="fsdp: free a block's gathered parameters after its forward and gather "
        "them again for backward (least memory); false keeps them until backward (less "
        "communication).",
    )
    dist_timeout: PositiveInt = Field(
        default=1800,
        description="Seconds a process waits for the others (a collective, the start of the "
        "job) before the job stops with an error naming the wait, instead of hanging.",
    )
    best_metric: Literal["val_accuracy", "val_balanced_accuracy", "val_loss"] = Field(
        default="val_accuracy",
        description="The validation column that picks best.safetensors; ties go to the lower "
        "val_loss (to the higher val_accuracy for val_loss). Without a validation split the "
        "training accuracy (or loss) stands in.",
    )
    freeze: FreezeSetting = Field(
        default="none",
        description="'backbone': train only the classifier; N: train only the model's last N "
        "layers (blocks; a hierarchical model's blocks within its stages) and what follows "
        "them (final norm, classifier); 'none': train everything. Frozen parameters get no "
        "optimiser state and their BatchNorm statistics stay as loaded.",
    )
    lora: LoraSection | None = Field(
        default=None, description="Low-rank adapters through peft; null disables."
    )

    @model_validator(mode="after")
    def _rules(self) -> TrainConfig:
        for name in ("epochs", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise SpecValueError(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise SpecValueError("min_lr", "need 0 <= min_lr <= lr and lr > 0")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise SpecValueError("warmup_epochs", "warmup_epochs and weight_decay must be >= 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise SpecValueError("grad_clip", "must be > 0, or null to disable clipping")
        if self.accumulation_steps < 1:
            raise SpecValueError("accumulation_steps", "must be a positive integer")
        if self.batch_size % self.accumulation_steps:
            raise SpecValueError(
                "accumulation_steps",
                f"must divide batch_size={self.batch_size} (each micro-batch is "
                "batch_size / accumulation_steps images)",
            )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise SpecValueError("ema_decay", "must be in (0, 1), or null to disable the EMA")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise SpecValueError("layer_decay", "must be in (0, 1], or null to disable it")
        if self.strategy != "fsdp":
            for name, default in (
                ("fsdp_cpu_offload", False),
                ("fsdp_reshard_after_forward", True),
            ):
                if getattr(self, name) != default:
                    here = self.strategy or "null"
                    raise SpecValueError(
                        name, f"only applies with strategy: fsdp (strategy here: {here})"
                    )
        if self.dist_timeout < 1:
            raise SpecValueError("dist_timeout", "must be a positive number of seconds")
        if self.lora is not None and self.freeze != "none":
            raise SpecValueError(
                "freeze",
                "train.lora freezes everything but the adapters and the classifier "
                "already; leave train.freeze at none",
            )
        if self.lora is not None and self.ema_decay is not None:
            raise SpecValueError(
                "ema_decay", "a weight EMA is not kept for LoRA runs; set train.ema_decay: null"
            )
        if self.lora is not None and self.strategy == "fsdp":
            raise SpecValueError(
                "lora",
                "LoRA runs are not sharded yet (peft's adapter layers and the merge-on-save "
                "hook are not FSDP2-aware); use strategy: ddp, or train.freeze with fsdp",
            )
        return self


class DataConfig(_Section):
    """Where the images (or clips) are and how they are augmented.

    Labels come from class folders (``<split>/<class>/<file>``) or, with ``train_csv`` /
    ``val_csv``, from a ``path,label`` table. The image size is not repeated here: it is the
    model's ``input_size`` (and, for video, its ``frames``).
    """

    train_split: str = Field(default="train", description="Sub-folder with <class>/<image>.")
    val_split: str = Field(default="val", description="Sub-folder used for validation.")
    mean: tuple[FiniteFloat, ...] = IMAGENET_MEAN
    std: tuple[PositiveFloat, ...] = IMAGENET_STD
    scale: tuple[PositiveFloat, PositiveFloat] = Field(
        default=(0.08, 1.0), description="Random-resized-crop area range (fraction of image)."
    )
    ratio: tuple[PositiveFloat, PositiveFloat] = Field(
        default=(0.75, 4 / 3), description="Random-resized-crop aspect-ratio range."
    )
    hflip: Probability = Field(default=0.5, description="Horizontal flip probability.")
    eval_crop: FiniteFloat = Field(
        default=1.0, description="Centre-crop fraction at evaluation (1.0 = resize whole image)."
    )
    num_workers: NonNegativeInt = Field(default=0, description="DataLoader worker processes.")
    train_csv: str | None = Field(
        default=None,
        description="CSV of 'path,label' rows (relative to the CSV's folder) labelling the "
        "training images instead of class folders; relative to the data folder.",
    )
    val_csv: str | None = Field(default=None, description="The same for the validation images.")
    auto_augment: Literal["none", "trivial", "rand"] = Field(
        default="none",
        description="'trivial': TrivialAugment (one random op, random strength per image); "
        "'rand': RandAugment (aug_ops ops at aug_magnitude).",
    )
    aug_ops: NonNegativeInt = Field(default=2, description="RandAugment: ops applied per image.")
    aug_magnitude: Annotated[NonNegativeFloat, Field(le=30.0)] = Field(
        default=9.0, description="RandAugment strength, 0..30."
    )
    color_jitter: Probability = Field(
        default=0.0,
        description="Random brightness, contrast and saturation factor in [1-x, 1+x].",
    )
    random_erasing: Probability = Field(
        default=0.0, description="Probability of erasing a random rectangle with noise."
    )
    erasing_scale: tuple[Probability, Probability] = Field(
        default=(0.02, 1 / 3), description="Random-erasing area range (fraction of image)."
    )
    sampler: Literal["shuffle", "balanced"] = Field(
        default="shuffle",
        description="'balanced': draw every class equally often (with replacement) per epoch.",
    )
    temporal_jitter: bool = Field(
        default=True,
        description="Video: pick a random frame inside each of the model's `frames` segments "
        "when training (the middle frame when evaluating).",
    )
    max_patches: PositiveInt | None = Field(
        default=None,
        description="Native resolution (models that take images of different sizes: navit, "
        "siglip2-naflex): keep each image's aspect ratio, resized to at most this many patches "
        "(each side a whole number of patches) instead of to the model's square; batches are "
        "lists of images the model packs into shared sequences.",
    )

    @model_validator(mode="after")
    def _rules(self) -> DataConfig:
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise SpecValueError("mean", "mean and std need the same length, 1 or 3 channels")
        if any(s <= 0 for s in self.std):
            raise SpecValueError("std", "every std must be > 0")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise SpecValueError("scale", "need 0 < min <= max <= 1")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise SpecValueError("ratio", "need 0 < min <= max")
        if not 0.0 <= self.hflip <= 1.0:
            raise SpecValueError("hflip", "must be a probability in [0, 1]")
        if not 0.0 < self.eval_crop <= 1.0:
            raise SpecValueError("eval_crop", "must be in (0, 1]")
        if self.num_workers < 0:
            raise SpecValueError("num_workers", "must be >= 0")
        if self.aug_ops < 1 or not 0.0 <= self.aug_magnitude <= 30.0:
            raise SpecValueError("aug_magnitude", "need aug_ops >= 1 and 0 <= aug_magnitude <= 30")
        if not 0.0 <= self.color_jitter < 1.0:
            raise SpecValueError("color_jitter", "must be in [0, 1)")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise SpecValueError("random_erasing", "must be a probability in [0, 1]")
        if not 0 < self.erasing_scale[0] <= self.erasing_scale[1] < 1:
            raise SpecValueError("erasing_scale", "need 0 < min <= max < 1")
        return self


class WeightsSection(BaseModel):
    """``weights: hf-hub:google/vit-base-patch16-224`` or ``{source: ..., format: ..., strict: ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        description="vitzoo/timm checkpoint file, Hugging Face model folder, or hf-hub:ORG/NAME."
    )
    format: WeightFormat | None = Field(default=None, description="Override format detection.")
    strict: bool = Field(
        default=True, description="Every tensor used and filled, or an error listing the rest."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"source": data} if isinstance(data, str) else data
