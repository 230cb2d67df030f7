"""CLIP and SigLIP image towers: timm and OpenCLIP checkpoints compute the same function in
vitzoo, and every released full-size layout maps strictly onto its preset.

The fixtures (``tools/reference_fixtures/clip.py``) are the references' own tiny models, every
tensor perturbed; OpenCLIP's hold the whole image-text model (text tower too) and record
``encode_image``. Outputs are compared by ``fidelity``'s rule (float64 within 1e-9, float32
within 1e-5 x the output's scale). The full-size layouts (``tools/make_reference_layouts.py``)
are timm's towers with the head their release has and OpenCLIP's image-text models.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fidelity import assert_matches_fixture
from reference_data import FIXTURE_DIR, load_reference, max_abs_diff
from resampling_helpers import at_two_sizes, tiny_preset
from safetensors.torch import save_file

import vitzoo
from vitzoo.plugins import get_plugin_system
from vitzoo.weights import WeightsError, load_pretrained, load_state_dict


def tower(meta: dict[str, Any], model_type: str, **extra: Any) -> dict[str, Any]:
    """The vitzoo spec of a tiny tower from the reference's constructor arguments."""
    size = meta.get("img_size", meta.get("image_size"))
    width = meta.get("embed_dim") if "width" not in meta else meta["width"]
    heads = meta.get("num_heads") or meta["width"] // meta["head_width"]
    return {
        "model": {
            "type": model_type,
            "image_size": size,
            "dim": width,
            "depth": meta.get("depth", meta.get("layers")),
            "num_heads": heads,
            **extra,
        }
    }


def clip_spec(meta: dict[str, Any], head: str = "linear", bias: bool = False) -> dict[str, Any]:
    return tower(
        meta,
        "clip",
        num_classes=meta.get("num_classes", meta.get("embed_dim")),
        patch={"type": "linear", "patch_size": meta["patch_size"], "bias": bias},
        mlp={"type": "mlp", "ratio": 4.0, "activation": meta["activation"]},
        head={"type": head},
    )


def siglip_spec(meta: dict[str, Any]) -> dict[str, Any]:
    return tower(
        meta,
        "siglip",
        num_classes=meta["num_classes"],
        patch={"type": "linear", "patch_size": meta["patch_size"]},
        mlp={"type": "mlp", "hidden_dim": meta["hidden_dim"], "activation": "gelu-tanh"},
    )


def map_cls_spec(meta: dict[str, Any]) -> dict[str, Any]:
    """timm's MAP pooling on a model with a class token (exact GELU, as timm's default)."""
    return tower(
        meta,
        "vit",
        num_classes=meta["num_classes"],
        patch={"type": "linear", "patch_size": meta["patch_size"]},
        pool={"type": "map"},
    )


CASES = {
    "timm-clip": clip_spec,
    "timm-clip-quickgelu": clip_spec,
    "timm-siglip": siglip_spec,
    "timm-vit-map-cls": map_cls_spec,
    "openclip-clip": lambda meta: clip_spec(meta, head="projection"),
    "openclip-siglip": siglip_spec,
}


def saved(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_checkpoint_loads_with_the_same_function(name: str, tmp_path: Path) -> None:
    """The user's path: the reference's file, format and converter detected by
    ``vitzoo.build(spec, weights=FILE)``; strict accounting of every tensor."""
    fixture = load_reference(name)
    spec = CASES[name](fixture.meta)
    model = vitzoo.build(spec, weights=saved(fixture.state_dict, tmp_path / f"{name}.st")).eval()
    assert_matches_fixture(model, fixture)


@pytest.mark.parametrize(
    ("name", "preset", "overrides"),
    [
        # timm's CLIP head has a bias the perturbation makes non-zero: a linear head holds it
        ("timm-clip-resized", "clip-b32", {"model.head": {"type": "linear"}}),
        ("timm-siglip-resized", "siglip-b16-224", {}),
    ],
)
def test_towers_resample_their_positions_as_timm_does(
    name: str, preset: str, overrides: dict[str, Any]
) -> None:
    """The preset's own positions option (bicubic, antialiased: timm's) at the fixture's own
    size, at a second one (dynamic_img_size) and after set_input_size."""
    fixture = load_reference(name)
    model = tiny_preset(preset, fixture.meta, dynamic_img_size=True, **overrides)
    load_state_dict(model, fixture.state_dict, source="timm")
    assert_matches_fixture(model, fixture, at_two_sizes(tuple(fixture.meta["second_size"])))


def test_openclip_loads_its_vision_tower_and_says_so_in_one_line(tmp_path: Path) -> None:
    fixture = load_reference("openclip-clip")
    lines: list[str] = []
    loaded = load_pretrained(
        saved(fixture.state_dict, tmp_path / "clip.st"),
        clip_spec(fixture.meta, head="projection"),
        log=lines.append,
    )
    text = sorted(k for k in fixture.state_dict if not k.startswith("visual."))
    assert sorted(loaded.conversion.other_tower) == text and "logit_scale" in text
    (line,) = [line for line in lines if "multimodal" in line]
    assert f"{len(text)} tensors of its other tower" in line and "vision tower" in line
    assert loaded.converter == "openclip"


def test_timm_clip_zero_bias_is_the_projection_and_a_real_bias_is_not_dropped(
    tmp_path: Path,
) -> None:
    """timm gives CLIP's bias-free projection a zero bias: the projection head loads it as the
    same function; a non-zero bias is never dropped silently."""
    fixture = load_reference("timm-clip")
    state = dict(fixture.state_dict) | {"head.bias": torch.zeros(8)}
    path = saved(state, tmp_path / "zero.st")
    linear = vitzoo.build(clip_spec(fixture.meta), weights=path).eval()
    projection = vitzoo.build(clip_spec(fixture.meta, head="projection"), weights=path).eval()
    with torch.no_grad():
        assert torch.equal(projection(fixture.input), linear(fixture.input))
    nonzero = saved(fixture.state_dict, tmp_path / "nonzero.st")
    with pytest.raises(WeightsError, match="head.bias"):
        vitzoo.build(clip_spec(fixture.meta, head="projection"), weights=nonzero)


@pytest.mark.parametrize(
    ("name", "change", "at_least"),
    [
        ("timm-clip-quickgelu", {"mlp": {"type": "mlp", "activation": "gelu"}}, 1e-3),
        ("timm-siglip", {"mlp": {"type": "mlp", "hidden_dim": 59, "activation": "gelu"}}, 1e-6),
        ("timm-vit-map-cls", {"pool": {"type": "map", "include_prefix": True}}, 1e-2),
    ],
    ids=["quick-gelu", "tanh-gelu", "map-leaves-prefix-out"],
)
def test_each_option_carries_the_released_function(
    name: str, change: dict[str, Any], at_least: float
) -> None:
    """Without QuickGELU, the tanh GELU, or with the probe reading the class token, the same
    weights compute something else: the fixtures see each option (float64, where 1e-9 rules)."""
    fixture = load_reference(name)
    spec = CASES[name](fixture.meta)
    spec["model"] |= change
    model = vitzoo.build(spec).eval()
    from vitzoo.weights import load_state_dict

    load_state_dict(model, fixture.state_dict, source="timm")
    with torch.no_grad():
        out = model.double()(fixture.input.double())
    assert max_abs_diff(out, fixture.outputs64["output"]) > at_least


def test_a_swapped_probe_projection_moves_the_output_far_beyond_the_tolerance() -> None:
    """The noise is large enough: exchanging the probe's query for its key half of kv changes
    the SigLIP output by orders of magnitude more than the float32 tolerance."""
    fixture = load_reference("timm-siglip")
    state = dict(fixture.state_dict)
    q, kv = state["attn_pool.q.weight"], state["attn_pool.kv.weight"]
    state["attn_pool.q.weight"], state["attn_pool.kv.weight"] = kv[:16], torch.cat([q, kv[16:]])
    model = vitzoo.build(siglip_spec(fixture.meta)).eval()
    from vitzoo.weights import load_state_dict

    load_state_dict(model, state, source="timm")
    with torch.no_grad():
        diff = max_abs_diff(model(fixture.input), fixture.output)
    assert diff > 1e3 * 1e-5 * max(1.0, fixture.output.abs().max().item())


# -- full-size released layouts ----------------------------------------------------------------
def released_layouts() -> dict[str, dict[str, dict[str, list[int]]]]:
    return json.loads(gzip.decompress((FIXTURE_DIR / "layouts.json.gz").read_bytes()))


def clip_presets() -> list[tuple[str, str]]:
    """(preset, timm alias) for every CLIP / SigLIP preset alias."""
    registry = get_plugin_system().registry
    return sorted(
        (name, alias)
        for name in registry.names("preset")
        if registry.get("preset", name).plugin == "clip"
        for alias in registry.get("preset", name).aliases
    )


def convert_layout(preset: str, converter: str, layout: dict[str, list[int]]) -> Any:
    from vitzoo.weights import converters_for
    from vitzoo.weights.converter import raise_for_problems, target_shapes

    (found,) = [c for c in converters_for() if c.name == converter]
    with torch.device("meta"):
        model = vitzoo.build(preset)
        tensors = {k: torch.empty(shape) for k, shape in layout.items()}
    assert found.recognises(tensors, {})
    shapes = target_shapes(model)
    conversion = found.convert(tensors, shapes)
    raise_for_problems(conversion, shapes, f"{converter} -> {preset}")
    return conversion


def test_every_preset_has_a_timm_alias_and_its_release_layout() -> None:
    presets = clip_presets()
    registry = get_plugin_system().registry
    owned = {n for n in registry.names("preset") if registry.get("preset", n).plugin == "clip"}
    assert {p for p, _ in presets} == owned
    assert {a for _, a in presets} <= set(released_layouts()["timm"])


@pytest.mark.parametrize(("preset", "alias"), clip_presets())
def test_full_size_timm_release_maps_onto_its_preset(preset: str, alias: str) -> None:
    """Every tensor of timm's released tower (CLIP: the projection as head, its zero bias
    declared unused; SigLIP: no head; SigLIP 2 NaFlex: its own converter) lands on the preset
    the alias names, shapes equal."""
    registry = get_plugin_system().registry
    assert registry.canonical("preset", alias) == preset
    architecture = registry.get("preset", preset).spec["model"]["type"]
    converter = {"siglip2-naflex": "timm-naflex"}.get(architecture, "timm-clip")
    convert_layout(preset, converter, released_layouts()["timm"][alias])


#: OpenCLIP model name -> the preset of its image tower.
OPEN_CLIP_PRESETS = {
    "ViT-B-32-quickgelu": "clip-b32-quickgelu",
    "ViT-B-32": "clip-b32",
    "ViT-B-16": "clip-b16",
    "ViT-L-14": "clip-l14",
    "ViT-L-14-336": "clip-l14-336",
    "ViT-H-14": "clip-h14",
    "ViT-H-14-378-quickgelu": "clip-h14-378-quickgelu",
    "ViT-g-14": "clip-g14",
    "ViT-bigG-14": "clip-bigg14",
}


@pytest.mark.parametrize(("released", "preset"), sorted(OPEN_CLIP_PRESETS.items()))
def test_full_size_openclip_model_loads_its_vision_tower_into_the_preset(
    released: str, preset: str
) -> None:
    layout = released_layouts()["official"][released]
    conversion = convert_layout(preset, "openclip", layout)
    assert set(conversion.other_tower) == {k for k in layout if not k.startswith("visual.")}
    assert "token_embedding.weight" in conversion.other_tower


def test_timm_name_is_the_clip_tower_with_the_projection_head_and_clip_statistics() -> None:
    """``vitzoo.build("vit_base_patch32_clip_224")``: the projection is the head (the released
    512-d image embedding) and CLIP's statistics travel with the preset; SigLIP's too."""
    from vitzoo.data import resolve_data_config

    with torch.device("meta"):
        clip = vitzoo.build("vit_base_patch32_clip_224")
        siglip = vitzoo.build("vit_so400m_patch14_siglip_384")
    assert clip.vitzoo_spec.model.head.type == "projection" and clip.num_classes == 512
    assert resolve_data_config(clip).mean == (0.48145466, 0.4578275, 0.40821073)
    assert resolve_data_config(clip).std == (0.26862954, 0.26130258, 0.27577711)
    assert siglip.num_classes == 0 and siglip.vitzoo_spec.model.pool.type == "map"
    assert resolve_data_config(siglip).mean == (0.5, 0.5, 0.5)
    assert resolve_data_config(siglip).input_size == (3, 384, 384)


def test_timm_alias_with_an_openclip_file_computes_encode_image(tmp_path: Path) -> None:
    """The OpenCLIP file loads through the timm alias (detected among the alias's family's
    converters), computes ``encode_image``, and keeps the preset's CLIP preprocessing."""
    from vitzoo.data import resolve_data_config

    fixture = load_reference("openclip-clip")
    tiny = {"image_size": 32, "dim": 16, "depth": 2, "num_heads": 2, "num_classes": 8}
    model = vitzoo.build(
        "vit_base_patch32_clip_quickgelu_224",
        weights=saved(fixture.state_dict, tmp_path / "open_clip_model.safetensors"),
        **tiny,
        **{"model.patch.patch_size": 8},
    ).eval()
    assert_matches_fixture(model, fixture)
    assert resolve_data_config(model).mean == (0.48145466, 0.4578275, 0.40821073)
