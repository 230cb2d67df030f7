"""``vitzoo attention CKPT_OR_PRESET IMAGE -o overlay.png``: where does the class token look?

The map comes from :func:`vitzoo.inspect` (so from any registered attention, with no patching):
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

#: Channel statistics used when the model's spec has no ``data:`` section (ImageNet's).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def load_model(source: str) -> Any:
    """A checkpoint file (``vitzoo.save`` output) or anything ``vitzoo.build`` accepts."""
    import vitzoo

    path = Path(source)
    if path.is_file() and path.suffix not in {".yaml", ".yml", ".json"}:
        return vitzoo.load(path)
    if path.is_dir() or source.startswith("hf-hub:"):  # a Hugging Face model (folder / hub)
        return vitzoo.build(weights=source)
    return vitzoo.build(source)


def normalisation(source: str, model: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std the weights were trained with (checkpoint metadata), else ImageNet's."""
    pre = getattr(model, "vitzoo_preprocessing", None)
    path = Path(source)
    if pre is None and path.is_file() and path.suffix == ".safetensors":
        from vitzoo.checkpoint import read_checkpoint
        from vitzoo.weights.preprocessing import Preprocessing

        pre = Preprocessing.from_metadata(read_checkpoint(path)[1])
    if pre is not None and pre.mean is not None and pre.std is not None:
        return tuple(pre.mean), tuple(pre.std)
    data = getattr(getattr(model, "vitzoo_spec", None), "data", None)  # what it was trained with
    if data is not None and getattr(data, "mean", None) and getattr(data, "std", None):
        return tuple(data.mean), tuple(data.std)
    return MEAN, STD


def image_tensor(
    image: Any,
    size: tuple[int, int],
    channels: int,
    mean: tuple[float, ...] = MEAN,
    std: tuple[float, ...] = STD,
) -> Any:
    """PIL image -> normalised (1, C, H, W) tensor at the model's input size."""
    import numpy as np
    import torch

    mode = "RGB" if channels == 3 else "L"
    resized = image.convert(mode).resize((size[1], size[0]))
    array = np.asarray(resized, dtype=np.float32) / 255.0
    x = torch.from_numpy(array).reshape(size[0], size[1], -1).permute(2, 0, 1)
    if len(mean) in (1, channels):
        x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x.unsqueeze(0)


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
        raise click.ClickException(
            f"no attention map over the {n_patches} patch tokens was recorded; this model's "
            "attention does not act on the patch grid"
        )
    if not -len(square) <= layer < len(square):
        raise click.ClickException(
            f"--layer {layer} is out of range: this model records {len(square)} attention "
            f"maps over the patches; allowed: {-len(square)} to {len(square) - 1}"
        )
    chosen = square[: (layer % len(square)) + 1]
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


def overlay(image: Any, heat: Any, alpha: float) -> Any:
    """Blend a [0, 1]-normalised heat map (upsampled to the image) over the image in red."""
    import numpy as np
    from PIL import Image

    heat = heat - heat.min()
    heat = (heat / heat.max().clamp_min(1e-12)).numpy()
    small = Image.fromarray((heat * 255).astype(np.uint8), mode="L")
    big = np.asarray(small.resize(image.size, Image.BILINEAR), dtype=np.float32) / 255.0
    colour = np.stack([big, np.zeros_like(big), 1.0 - big], axis=-1) * 255
    heat_image = Image.fromarray(colour.astype(np.uint8), mode="RGB")
    return Image.blend(image.convert("RGB"), heat_image, alpha)


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
    import torch
    from PIL import Image

    from vitzoo.introspection import inspect
    from vitzoo.training.data import image_error

    target = Path(output)
    if not target.parent.is_dir():
        raise click.ClickException(
            f"cannot write {output}: the folder {target.parent} does not exist"
        )
    try:
        image = Image.open(image_path)
        image.load()
    except Exception as exc:  # Pillow raises many types for bad files
        raise click.ClickException(image_error(image_path, exc)) from None
    model = load_model(source).eval()
    if "tokens" not in getattr(model, "capabilities", frozenset()):
        raise click.ClickException(
            f"attention overlays need a flat-token model; {type(model).__name__} has "
            f"capabilities {sorted(getattr(model, 'capabilities', ())) or '(none)'}"
        )
    channels, *size = model.input_size
    x = image_tensor(image, (size[0], size[1]), channels, *normalisation(source, model))
    with torch.no_grad():
        seen = inspect(model, x)
    grid = tuple(model.patch.grid_for(tuple(size)))
    maps = list(seen.attentions.values())
    heat = attention_grid(maps, int(model.num_prefix_tokens), grid, layer, rollout)
    overlay(image, heat, alpha).save(output, format="PNG")
    what = "attention rollout" if rollout else "attention"
    click.echo(f"wrote {output} ({what}, layer {layer}, grid {tuple(heat.shape)})")


COMMANDS = [attention]
