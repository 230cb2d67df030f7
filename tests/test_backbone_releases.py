"""The released DINOv2, DeiT III and AIMv2 models are their presets: exact parameter counts,
timm names as aliases, and every tensor of each full-size release (timm's, and the official
DINOv2 hub and DeiT III checkpoints) landing on its preset by name and shape, on the meta device.

Layouts: ``tests/data/reference/layouts.json.gz`` (``tools/make_reference_layouts.py``, from the
references' own constructors). The tiny fixtures prove the function; this proves the shapes.
"""

from __future__ import annotations

import pytest
import torch
from test_weights_timm import released_layouts
from vitzoo_plugins._catalogue import catalogue

import vitzoo
from vitzoo.spec.sources import validate_source
from vitzoo.weights.converter import raise_for_problems, target_shapes
from vitzoo.weights.selection import pick_converter

FAMILIES = ("dinov2", "deit3", "aimv2")
REGISTRY = vitzoo.get_registry()
PRESETS = sorted(
    name for name in REGISTRY.names("preset") if REGISTRY.get("preset", name).plugin in FAMILIES
)

#: Each preset's released names per source kind (the catalogue's ``released`` field).
RELEASED = {name: catalogue()[name]["released"] for name in PRESETS}
OFFICIAL = {name: released["official"][0] for name, released in RELEASED.items()}


def test_every_published_size_is_a_preset() -> None:
    """DINOv2 S/B/L/g with and without registers, DeiT III S/M/B/L/H and the 384-px S/B/L,
    AIMv2 L/H/1B/3B at 224, 336 and 448 px: each with its timm and official release names."""
    assert len(PRESETS) == 8 + 8 + 12, PRESETS
    assert all(set(r) >= {"timm", "official"} for r in RELEASED.values())


def _maps_onto(model: torch.nn.Module, layout: dict[str, list[int]], source: str) -> str:
    """Map ``layout`` onto ``model`` (meta) strictly through the converter vitzoo picks for it
    (by detection among the family's converters); returns that converter's name."""
    with torch.device("meta"):
        tensors = {k: torch.empty(shape) for k, shape in layout.items()}
    kinds = ("timm", "official") if source == "timm" else ("official", "timm")
    converter = pick_converter(model.vitzoo_spec.model.type, kinds, tensors)
    assert converter.source == source and converter.recognises(tensors, {})
    shapes = target_shapes(model)
    raise_for_problems(converter.convert(tensors, shapes), shapes, source)
    return converter.name


@pytest.mark.parametrize("name", PRESETS)
def test_exact_count_timm_alias_and_full_size_timm_release(name: str) -> None:
    """The catalogue's count is the reference's exact one, the timm name is the preset, and
    every tensor of timm's full-size model lands on it."""
    entry = REGISTRY.get("preset", name)
    (alias,) = RELEASED[name]["timm"]
    assert alias in entry.aliases
    with torch.device("meta"):
        model = vitzoo.build(name)
    assert sum(p.numel() for p in model.parameters()) == entry.expected_params
    assert validate_source(alias, REGISTRY)[0].model == model.vitzoo_spec.model
    _maps_onto(model, released_layouts()["timm"][alias], "timm")


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_full_size_official_release_maps_onto_its_preset(name: str) -> None:
    """A plain file of the official release, read as timm's format is (a .pth says nothing),
    still finds the official converter: timm's does not recognise it."""
    with torch.device("meta"):
        model = vitzoo.build(name)
    converter = _maps_onto(model, released_layouts()["official"][OFFICIAL[name]], "official")
    assert converter.startswith("official-")


@pytest.mark.parametrize(
    ("name", "crop", "mean"),
    [
        ("dinov2-s-reg4", 0.875, (0.485, 0.456, 0.406)),
        ("deit3-m", 0.9, (0.485, 0.456, 0.406)),
        ("deit3-b-384", 1.0, (0.485, 0.456, 0.406)),
        ("aimv2-l-336", 1.0, (0.48145466, 0.4578275, 0.40821073)),
        ("eva02-b14", 0.9, (0.48145466, 0.4578275, 0.40821073)),
        ("eva02-l14-448", 1.0, (0.48145466, 0.4578275, 0.40821073)),
        ("beit-b16", 0.9, (0.5, 0.5, 0.5)),
        ("beitv2-l16", 0.95, (0.485, 0.456, 0.406)),
    ],
)
def test_preprocessing_travels_with_the_preset(tmp_path, name: str, crop: float, mean) -> None:
    """Each preset's spec carries its release's evaluation preprocessing (timm's
    pretrained_cfg; DINOv2's official eval transform, 224 of 256); resolve_data_config -- what
    train, evaluate, predict and attention call -- reads it from the model and from a saved
    checkpoint alike, and the model's own input size decides the rest (DINOv2 at 224: 256 -> 224).
    """
    from vitzoo.data import resolve_data_config

    small = {"model.depth": 1, "model.dim": 32, "model.num_heads": 2}  # the preprocessing only
    model = vitzoo.build(name, **small)
    config = resolve_data_config(model)
    assert (config.crop_pct, config.mean, config.interpolation) == (crop, mean, "bicubic")
    path = tmp_path / "model.safetensors"
    vitzoo.save(model, path)
    assert resolve_data_config(path).to_dict() == config.to_dict()
    if name.startswith("dinov2"):
        at_224 = resolve_data_config(vitzoo.build(name, image_size=224, **small))
        assert at_224.input_size == (3, 224, 224) and round(224 / at_224.crop_pct) == 256
