"""``vitzoo attention CKPT_OR_PRESET IMAGE -o overlay.png``: where does the class token look?

The map comes from :func:`vitzoo.inspect_forward` (so from any registered attention, with no patching):
the class token's attention over the patches at one block (``--layer``, default the last), or
the attention rollout (Abnar & Zuidema 2020) through the blocks up to that one (``--rollout``).
A model without a class token (SimpleViT) shows the attention each patch receives, averaged over
queries. The map is upsampled over the image and blended as a red heat overlay (Pillow).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from vitzoo.capabilities import offers_of_model
from vitzoo.commands.errors import user_errors
from vitzoo.errors import InputError
from vitzoo.plugins import get_registry


def load_model(source: str) -> Any:
    """A checkpoint file (``vitzoo.save`` output) or anything ``vitzoo.build`` accepts."""
    import vitzoo

    path = Path(source)
    if weights_file(source) is not None:
        return vitzoo.load(path)
    if path.is_dir() or source.startswith("hf-hub:"):  # a Hugging Face model (folder / hub)
        return vitzoo.build(weights=source)
    return vitzoo.build(source)


def attention_grid(
    maps: list[Any], num_prefix: int, grid: tuple[int, int], layer: int, rollout: bool
) -> Any:
    """(h, w) map of how much the class token (or every token) attends to each patch."""
    import torch

    n_patches = math.prod(grid)
    square: list[Any] = []
    for prefix in dict.fromkeys((num_prefix, 0)):  # CaiT's self-attention blocks have no prefix
        n_tokens = prefix + n_patches
        square = [m[0].float().mean(dim=0) for m in maps if m.shape[-1] == m.shape[-2] == n_tokens]
        if square:
            num_prefix = prefix
            break
    if not square:
        raise InputError(
            f"no attention map over the {n_patches} patch tokens was recorded; this model's "
            "attention does not act on the patch grid"
        )
    from vitzoo.components.features import FeatureIndexError, resolve_feature_indices

    try:  # out of range is an error, not a wrap-around to another layer
        (index,) = resolve_feature_indices([layer], len(square))
    except FeatureIndexError as exc:
        raise InputError(f"--layer: {exc}") from None
    chosen = square[: index + 1]
    if rollout:
        eye = torch.eye(n_tokens)
        result = eye
        for attn in chosen:
            mixed = 0.5 * attn + 0.5 * eye
            result = (mixed / mixed.sum(dim=-1, keepdim=True)) @ result
        attn = result
    else:
        attn = chosen[-1]
    weights = attn[0, num_prefix:] if num_prefix else attn[:, num_prefix:].mean(dim=0)
    return weights.reshape(grid)


#: The overlay's shorter side is at least this many pixels (an 8x8 digit is unreadable as is).
MIN_SIDE = 384


def display_size(size: tuple[int, int], min_side: int = MIN_SIDE) -> tuple[int, int]:
    """``size`` scaled up by a whole factor until its shorter side reaches ``min_side``."""
    factor = max(1, math.ceil(min_side / max(1, min(size))))
    return size[0] * factor, size[1] * factor


def overlay(image: Any, heat: Any, alpha: float, min_side: int = MIN_SIDE) -> Any:
    """Blend a [0, 1]-normalised heat map over the image (blue = low, red = high), both
    upscaled to a readable size (pixel-exact for tiny images), with a labelled colour bar."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    heat = heat - heat.min()
    heat = (heat / heat.max().clamp_min(1e-12)).numpy()
    size = display_size(image.size, min_side)
    factor = size[0] // max(1, image.size[0])
    resample = Image.NEAREST if factor >= 4 else Image.BICUBIC
    base = image.convert("RGB").resize(size, resample)
    small = Image.fromarray((heat * 255).astype(np.uint8), mode="L")
    big = np.asarray(small.resize(size, Image.BILINEAR), dtype=np.float32) / 255.0
    colour = np.stack([big, np.zeros_like(big), 1.0 - big], axis=-1) * 255
    heat_image = Image.fromarray(colour.astype(np.uint8), mode="RGB")
    blended = Image.blend(base, heat_image, alpha)

    bar_w, margin = 18, 12
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    canvas = Image.new("RGB", (size[0] + bar_w + 90, size[1]), (255, 255, 255))
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    left = size[0] + margin
    top, bottom = margin + 8, size[1] - margin - 8
    for y in range(top, bottom + 1):
        level = 1.0 - (y - top) / max(1, bottom - top)
        tint = (round(255 * level), 0, round(255 * (1.0 - level)))
        mixed = tuple(round(alpha * t + (1 - alpha) * 255) for t in tint)
        draw.line([(left, y), (left + bar_w, y)], fill=mixed)
    draw.rectangle((left, top, left + bar_w, bottom), outline=(0, 0, 0))
    draw.text((left + bar_w + 6, top - 7), "high", fill=(0, 0, 0), font=font)
    draw.text((left + bar_w + 6, bottom - 7), "low", fill=(0, 0, 0), font=font)
    draw.text((left + bar_w + 6, (top + bottom) // 2 - 7), "attention", fill=(0, 0, 0), font=font)
    return canvas


def weights_file(source: str) -> Path | None:
    """SOURCE when it is a checkpoint file (whose metadata says how its inputs were prepared)."""
    from vitzoo.spec import is_spec_file_name

    path = Path(source)
    return path if path.is_file() and not is_spec_file_name(path) else None


def is_checkpoint(source: str) -> bool:
    """Whether SOURCE names weights (a checkpoint file, a Hugging Face folder or hub id)
    rather than a preset or spec, whose weights are random."""
    from vitzoo.spec import is_spec_file_name

    path = Path(source)
    if path.is_dir() or source.startswith("hf-hub:"):
        return True
    return path.is_file() and not is_spec_file_name(path)


@click.command("attention")
@click.argument("source", metavar="CKPT_OR_PRESET")
@click.argument("image_path", metavar="IMAGE", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="PNG to write."
)
@click.option("--layer", default=-1, show_default=True, help="Block whose attention is shown.")
@click.option("--rollout", is_flag=True, help="Attention rollout through the blocks up to --layer.")
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1))
def attention(
    source: str, image_path: str, output: str, layer: int, rollout: bool, alpha: float
) -> None:
    """Write an attention-map overlay of IMAGE for a checkpoint or preset."""
    if not is_checkpoint(source):
        click.echo(
            f"warning: {source} is not a checkpoint, so its weights are random (untrained); "
            "the map shows no learned attention. Pass a trained .safetensors file.",
            err=True,
        )
    with user_errors():
        _attention(source, image_path, output, layer, rollout, alpha)


def _attention(
    source: str, image_path: str, output: str, layer: int, rollout: bool, alpha: float
) -> None:
    import torch
    from PIL import Image

    from vitzoo.data.config import resolve_data_config
    from vitzoo.data.images import image_error
    from vitzoo.data.transforms import create_transform
    from vitzoo.introspection import inspect_forward

    target = Path(output)
    if not target.parent.is_dir():
        raise InputError(f"cannot write {output}: the folder {target.parent} does not exist")
    try:
        image = Image.open(image_path)
        image.load()
    except Exception as exc:  # Pillow raises many types for bad files
        raise InputError(image_error(image_path, exc)) from None
    model = load_model(source).eval()
    offers = offers_of_model(model, get_registry()) or frozenset()
    if "tokens" not in offers:
        raise InputError(
            f"attention overlays need a flat-token model (capability tokens); "
            f"{type(model).__name__} offers {sorted(offers) or '(nothing declared)'}"
        )
    # The overlay covers the whole image, so the model must see the whole image: no crop.
    data = resolve_data_config(model, checkpoint=weights_file(source), crop_pct=1.0)
    x = create_transform(data)(image).unsqueeze(0)
    with torch.no_grad():
        seen = inspect_forward(model, x)
    # the grid of the input the model saw (native resolution: the image's own, not data.size)
    grid = tuple(model.patch.grid_for(tuple(x.shape[-2:])))
    maps = list(seen.attentions.values())
    heat = attention_grid(maps, int(model.num_prefix_tokens), grid, layer, rollout)
    picture = overlay(image, heat, alpha)
    picture.save(output, format="PNG")
    what = "attention rollout" if rollout else "attention"
    click.echo(
        f"wrote {output} ({what}, layer {layer}, grid {tuple(heat.shape)}, "
        f"{picture.size[0]}x{picture.size[1]} px)"
    )


COMMANDS = [attention]
