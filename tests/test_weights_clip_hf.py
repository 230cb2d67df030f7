"""Hugging Face CLIP and SigLIP checkpoints load into vitzoo, the spec derived from config.json.

Each test builds a random-init transformers model from a tiny config, perturbs every tensor,
``save_pretrained``s it and loads the folder with no spec: the converter derives it from
``config.json``. Both sides run here, compared in float32 and float64 by ``fidelity``'s rule.
Full-size configs (transformers' defaults are ViT-B/32 CLIP and B/16 SigLIP; others given)
are checked on the meta device: the derived spec is the preset's, and every tensor maps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fidelity import assert_same_function

import vitzoo
from tests.weights_helpers import max_abs_diff, perturb_every_tensor
from vitzoo.spec import spec_to_dict
from vitzoo.weights import load_pretrained

transformers = pytest.importorskip("transformers")

VISION = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)
TEXT = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, vocab_size=50
)


def saved(model: torch.nn.Module, folder: Path) -> Path:
    perturb_every_tensor(model)
    model.eval().save_pretrained(folder)
    return folder


def image_embeds(model: Any, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).image_embeds


def pooled(model: Any, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).pooler_output


def logits(model: Any, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).logits


def clip_image_features(model: Any, x: torch.Tensor) -> torch.Tensor:
    return model.visual_projection(model.vision_model(pixel_values=x).pooler_output)


def siglip_image_features(model: Any, x: torch.Tensor) -> torch.Tensor:
    return model.vision_model(pixel_values=x).pooler_output


CASES: dict[str, tuple[Callable[[], Any], Callable[[Any, torch.Tensor], torch.Tensor]]] = {
    "CLIPVisionModelWithProjection": (
        lambda: transformers.CLIPVisionModelWithProjection(
            transformers.CLIPVisionConfig(**VISION, projection_dim=16)
        ),
        image_embeds,
    ),
    "CLIPVisionModel": (
        lambda: transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION)),
        pooled,
    ),
    "CLIPModel": (
        lambda: transformers.CLIPModel(
            transformers.CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16)
        ),
        clip_image_features,
    ),
    "CLIPForImageClassification": (
        lambda: transformers.CLIPForImageClassification(
            transformers.CLIPConfig(vision_config=VISION, text_config=TEXT, num_labels=3)
        ),
        logits,
    ),
    "SiglipVisionModel": (
        lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VISION)),
        pooled,
    ),
    "SiglipModel": (
        lambda: transformers.SiglipModel(
            transformers.SiglipConfig(vision_config=VISION, text_config=TEXT)
        ),
        siglip_image_features,
    ),
    "SiglipForImageClassification": (
        lambda: transformers.SiglipForImageClassification(
            transformers.SiglipConfig(vision_config=VISION, text_config=TEXT, num_labels=3)
        ),
        logits,
    ),
}


@pytest.mark.parametrize("name", ["CLIPVisionModel", "SiglipVisionModel"])
def test_hf_towers_at_another_size_resample_as_hugging_face_does(name: str, tmp_path: Path) -> None:
    """At 24 x 16 px Hugging Face resamples the table with ``interpolate_pos_encoding=True``
    (bicubic to the size, no antialias); the spec derived from its config.json says so, so
    vitzoo's dynamic-size model computes the same there (timm's antialiased way would not)."""
    make, _ = CASES[name]
    torch.manual_seed(0)
    hf = make()
    folder = saved(hf, tmp_path / name)
    ours = load_pretrained(folder, overrides={"dynamic_img_size": True}).model.eval()
    assert ours.vitzoo_spec.model.posenc.antialias is False
    x = torch.randn(2, 3, 24, 16)

    def at_size(model: Any, inputs: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=inputs, interpolate_pos_encoding=True).pooler_output

    assert_same_function(ours, hf, x, forward_theirs=at_size, label=f"hf {name} at 24 x 16")


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_model_loads_with_the_same_function(name: str, tmp_path: Path) -> None:
    make, output = CASES[name]
    torch.manual_seed(0)
    hf = make()
    folder = saved(hf, tmp_path / name)
    lines: list[str] = []
    loaded = load_pretrained(folder, log=lines.append)
    x, other = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        spread = max_abs_diff(output(hf, x), output(hf, other))
    assert spread > 1e-3, "the comparison is vacuous: the output does not depend on the input"
    assert_same_function(loaded.model.eval(), hf, x, forward_theirs=output, label=f"hf {name}")
    conversion = loaded.conversion
    assert conversion.unmatched_source == [] and conversion.missing_target == []
    multimodal = name in ("CLIPModel", "SiglipModel")
    assert bool(conversion.other_tower) == multimodal
    assert sum("multimodal checkpoint" in line for line in lines) == int(multimodal)


def test_siglip_classifier_leaves_its_unused_map_head_out(tmp_path: Path) -> None:
    """SiglipForImageClassification classifies the mean token; the MAP head it carries is
    declared unused (with the reason), and the derived spec pools by mean."""
    make, _ = CASES["SiglipForImageClassification"]
    loaded = load_pretrained(saved(make(), tmp_path / "cls"))
    assert loaded.spec.model.pool.type == "mean" and loaded.model.num_classes == 3
    unused = {k for k, why in loaded.conversion.unused.items() if "MAP head" in why}
    assert "vision_model.head.probe" in unused and len(unused) == 11


# -- the head follows the source where the caller set no class count ----------------------------
TINY_CLIP = {
    "model": {
        "type": "clip",
        "image_size": 32,
        "dim": 32,
        "depth": 2,
        "num_heads": 2,
        "patch": {"type": "linear", "patch_size": 8, "bias": False},
        "mlp": {"type": "mlp", "ratio": 1.5, "activation": "quick-gelu"},
    }
}


@pytest.fixture(scope="module")
def hf_projection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    make, _ = CASES["CLIPVisionModelWithProjection"]
    torch.manual_seed(0)
    hf = make()
    return saved(hf, tmp_path_factory.mktemp("hf") / "clip"), hf


def test_unset_class_count_follows_the_weights(hf_projection: tuple[Path, Any]) -> None:
    """The spec leaves num_classes at its default (512): the 16-d projection is kept, not
    re-initialised, and the model gives HF's image embedding; one line says so."""
    folder, hf = hf_projection
    lines: list[str] = []
    loaded = load_pretrained(folder, TINY_CLIP, log=lines.append)
    assert loaded.model.num_classes == 16
    assert any("head follows the weights: 16 outputs" in line for line in lines)
    x = torch.randn(2, 3, 32, 32)
    assert_same_function(
        loaded.model.eval(), hf, x, forward_theirs=image_embeds, label="head follows"
    )
    model = vitzoo.build(TINY_CLIP, weights=folder)
    assert model.num_classes == 16 and model.vitzoo_spec.model.head.type == "projection"


@pytest.mark.parametrize(
    "how",
    ["override", "spec", "yaml-section"],
)
def test_a_class_count_the_caller_sets_reinitialises_the_head(
    how: str, hf_projection: tuple[Path, Any], tmp_path: Path
) -> None:
    folder, _ = hf_projection
    if how == "override":
        model = vitzoo.build(TINY_CLIP, weights=folder, num_classes=10)
    elif how == "spec":
        spec = {"model": {**TINY_CLIP["model"], "num_classes": 10}}
        model = vitzoo.build(spec, weights=folder)
    else:
        import yaml

        path = tmp_path / "spec.yaml"
        spec = {"model": {**TINY_CLIP["model"], "num_classes": 10}, "weights": str(folder)}
        path.write_text(yaml.safe_dump(spec))
        model = vitzoo.build(path)
    assert model.num_classes == 10 and model.head.fc.weight.shape == (10, 32)
    unset = {k: v for k, v in TINY_CLIP["model"].items()}
    section = vitzoo.build({"model": unset, "weights": {"source": str(folder)}})
    assert section.num_classes == 16  # a spec's weights: section follows too when unset


# -- full-size configs: the derived spec is the preset's ---------------------------------------
FULL_SIZE = {
    "clip-b32-quickgelu": ("CLIPVisionModelWithProjection", "CLIPVisionConfig", {}),
    "clip-l14-336-quickgelu": (
        "CLIPVisionModelWithProjection",
        "CLIPVisionConfig",
        dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
    ),
    "clip-h14": (
        "CLIPVisionModelWithProjection",
        "CLIPVisionConfig",
        dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            patch_size=14,
            projection_dim=1024,
            hidden_act="gelu",
        ),
    ),
    "siglip-b16-224": ("SiglipVisionModel", "SiglipVisionConfig", {}),
    "siglip-so400m14-384": (
        "SiglipVisionModel",
        "SiglipVisionConfig",
        dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=384,
            patch_size=14,
        ),
    ),
}


@pytest.mark.parametrize("preset", sorted(FULL_SIZE))
def test_full_size_hf_config_derives_the_preset_and_maps_every_tensor(preset: str) -> None:
    from vitzoo.plugins import get_plugin_system
    from vitzoo.spec.sources import validate_source
    from vitzoo.weights.selection import converters_for

    model_cls, config_cls, kwargs = FULL_SIZE[preset]
    config = getattr(transformers, config_cls)(**kwargs)
    data = {**config.to_dict(), "architectures": [model_cls]}
    family = "clip" if preset.startswith("clip") else "siglip"
    (converter,) = [c for c in converters_for(family, "hf") if config.model_type in c.config_names]
    registry = get_plugin_system().registry
    derived, _ = validate_source(converter.spec_from_config(data), registry)
    wanted = spec_to_dict(vitzoo.resolve_spec(preset))["model"]
    derived_model = spec_to_dict(derived)["model"]
    # the same model but for how the table resamples at other sizes (Hugging Face's own way)
    hf_positions = {"antialias": False, "resample_in_float32": False}
    assert derived_model["posenc"] == {**wanted["posenc"], **hf_positions}
    assert {**derived_model, "posenc": None} == {**wanted, "posenc": None}
    with torch.device("meta"):
        hf = getattr(transformers, model_cls)(config)
        ours = vitzoo.build(preset)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert converter.convert(hf.state_dict(), shapes).problems(shapes) == []


def test_hf_activation_names_map_to_exact_equivalents() -> None:
    """Every HF ``hidden_act`` vitzoo accepts computes transformers' own function (float64)."""
    from transformers.activations import ACT2FN

    from vitzoo.components.mlp import ACTIVATIONS
    from vitzoo.weights.hf_config import HF_ACTIVATIONS

    x = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    for hf_name, ours in HF_ACTIVATIONS.items():
        diff = (ACT2FN[hf_name](x) - ACTIVATIONS[ours]()(x)).abs().max().item()
        assert diff < 1e-14, (hf_name, ours, diff)
    assert "gelu_fast" not in HF_ACTIVATIONS  # sqrt(2/pi) rounded: not the same function
