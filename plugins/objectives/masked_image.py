"""Masked-image modelling on flat token models: MAE, SimMIM, MPP and MP3.

Each hides or corrupts some patch tokens and learns to predict something about them (pixels,
binned colours, positions). They reach the model only through ``embed``/``encode``/
``num_prefix_tokens``/``patch`` (see :mod:`vitzoo.objectives`), so any registered flat token
backbone works; the masking maths they share is in :mod:`vitzoo.objectives.masking`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from vitzoo_plugins.objectives.images import require_images

from vitzoo import SpecValueError
from vitzoo.components.attention import MhsaConfig
from vitzoo.components.block import PreNormBlockConfig
from vitzoo.components.layers import init_vit_weights
from vitzoo.components.mlp import MlpConfig
from vitzoo.components.posenc import sincos_table
from vitzoo.config import FiniteFloat, PositiveInt, Probability, Rate
from vitzoo.objectives import Objective, ObjectiveConfig, ObjectiveContext, ObjectiveOutput
from vitzoo.objectives.base import accuracy, make_output
from vitzoo.objectives.masking import (
    effective_patch_size,
    gather_tokens,
    mean_over_masked,
    normalise_patches,
    patchify_pixels,
    random_split,
)


class IncompatibleModelError(ValueError):
    """The model cannot serve this objective (found when the objective first runs it)."""


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


def transformer_stack(octx: ObjectiveContext, dim: int, depth: int, heads: int) -> nn.ModuleList:
    """``depth`` standard pre-norm blocks built from the registered core components."""
    block_ctx = octx.component_context(
        dim=dim, num_heads=heads, attention=MhsaConfig(), mlp=MlpConfig()
    )
    return nn.ModuleList(block_ctx.build("block", PreNormBlockConfig()) for _ in range(depth))


class MaeObjective(TokenObjective):
    """Masked autoencoder pre-training (He et al. 2021)."""

    def __init__(self, config: MaeConfig, octx: ObjectiveContext) -> None:
        super().__init__(octx.model, "mae")
        self.config = config
        d = config.decoder_dim
        self.enc_to_dec = nn.Linear(self.dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer(
            "decoder_pos", sincos_table(self.grid, d, temperature=10000.0), persistent=False
        )
        self.decoder = transformer_stack(octx, d, config.decoder_depth, config.decoder_heads)
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
        loss = mean_over_masked((pred - target).pow(2).mean(dim=-1), masked)
        return make_output(loss, encoder_tokens=float(self.last_encoder_tokens))


# ----- SimMIM --------------------------------------------------------------------------------
class SimMimConfig(ObjectiveConfig):
    """SimMIM (Xie et al. 2022): mask tokens in the encoder, linear pixel head, L1 on masked patches.

    Masking is at the model's token granularity (the paper masks 32x32 blocks of a patch-16 ViT).
    """

    type: Literal["simmim"] = "simmim"
    mask_ratio: Rate = Field(0.6, gt=0.0, lt=1.0)


class SimMimObjective(TokenObjective):
    """SimMIM masked image modelling (Xie et al. 2022)."""

    def __init__(self, config: SimMimConfig, octx: ObjectiveContext) -> None:
        super().__init__(octx.model, "simmim")
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
        loss = mean_over_masked((pred - target).abs().mean(dim=-1), masked)
        return make_output(loss)


# ----- MPP -----------------------------------------------------------------------------------
class MppConfig(ObjectiveConfig):
    """Masked patch prediction (ViT paper, App. B.1.2): predict corrupted patches' binned colour.

    ``mask_prob`` of the patches are corrupted: a mask embedding (80%), another patch's embedding
    (10%) or left unchanged (10%); each is classified into 2^(bits*C) mean colours.
    """

    type: Literal["mpp"] = "mpp"
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
    """Masked patch prediction of binned mean colours (Dosovitskiy et al. 2021)."""

    def __init__(self, config: MppConfig, octx: ObjectiveContext) -> None:
        super().__init__(octx.model, "mpp")
        self.config = config
        self.channels = int(octx.model.input_size[0])  # type: ignore[index]
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


# ----- MP3 -----------------------------------------------------------------------------------
class Mp3Config(ObjectiveConfig):
    """MP3 (Zhai et al. 2022): predict each patch's position from content, without position input.

    Every patch is a query but only the unmasked ``1 - mask_ratio`` are keys/values (a key
    padding mask), so the task cannot be solved by matching neighbours' content alone.
    """

    type: Literal["mp3"] = "mp3"
    mask_ratio: Rate = Field(0.75, ge=0.0, lt=1.0)


class Mp3Objective(TokenObjective):
    """Masked position prediction (Zhai et al. 2022)."""

    def __init__(self, config: Mp3Config, octx: ObjectiveContext) -> None:
        super().__init__(octx.model, "mp3")
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
