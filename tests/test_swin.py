"""Swin and Swin V2: the released layouts load and compute the references' functions.

* timm (``timm-swin``, ``timm-swinv2``) and the official Microsoft layout (``official-swin``,
  ``official-swinv2``): reference fixtures (``tools/reference_fixtures/swin.py``): a non-square
  input whose stage maps no window tiles (every block pads), shifted blocks in every stage, and a
  stage where one axis fits in a window (timm shrinks it and drops that axis' shift); Swin V2
  fine-tuned at windows larger than its pre-training ones.
* Hugging Face (``Swin*``, ``Swinv2*``): the tiny model is built here, perturbed, and read both
  from its saved folder (the files' names) and from memory (transformers >= 5's names).
* Every preset: the exact parameter count of its reference, and every full-size released layout
  (timm, official, Hugging Face; ``tests/data/reference/layouts.json.gz``) maps onto it strictly.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
import torch
from fidelity import assert_matches_fixture, assert_same_function
from reference_data import FIXTURE_DIR, load_reference, max_abs_diff

import vitzoo
from tests.weights_helpers import perturb_every_tensor
from vitzoo.weights import load_state_dict


def swin_spec(meta: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The vitzoo spec of a timm Swin / Swin V2 constructed with ``meta``'s arguments."""
    depths = meta["depths"]
    v2 = "pretrained_window_sizes" in meta
    model: dict[str, Any] = {
        "type": "swinv2" if v2 else "swin",
        "image_size": meta["img_size"],
        "patch_size": meta["patch_size"],
        "num_classes": meta["num_classes"],
        "dims": [meta["embed_dim"] * 2**i for i in range(len(depths))],
        "depths": depths,
        "num_heads": meta["num_heads"],
        "window_sizes": meta["window_size"],
        "mlp": {"type": "mlp", "ratio": meta["mlp_ratio"]},
    }
    if v2:
        model["pretrained_window_sizes"] = meta["pretrained_window_sizes"]
    return {"model": {**model, **overrides}}


FIXTURES = {
    "timm-swin": "timm",
    "timm-swinv2": "timm",
    "official-swin": "official",
    "official-swinv2": "official",
}


def converted(name: str, **overrides: Any) -> torch.nn.Module:
    fixture = load_reference(name)
    model = vitzoo.build(swin_spec(fixture.meta, **overrides)).eval()
    load_state_dict(model, fixture.state_dict, source=FIXTURES[name])
    return model


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_swin_computes_the_references_function(name: str) -> None:
    assert_matches_fixture(converted(name), load_reference(name))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_only_the_own_layouts_converter_recognises_it(name: str) -> None:
    from vitzoo.weights import converters_for

    fixture = load_reference(name)
    recognising = [c.name for c in converters_for("swin") if c.recognises(fixture.state_dict, {})]
    assert recognising == [f"{FIXTURES[name]}-swin"]


def test_fixture_noise_is_large_enough_to_see_a_swapped_query_and_key() -> None:
    """Swapping the q and k projections moves the logits far past the tolerance (1e-5 x 7)."""
    fixture = load_reference("timm-swin")
    model = converted("timm-swin")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
                q, k, v = param.chunk(3)
                param.copy_(torch.cat([k, q, v]))
        assert max_abs_diff(model(fixture.input), fixture.output) > 1e-2


@pytest.mark.parametrize(
    ("name", "override"),
    [
        ("timm-swin", {"window_clamp": "shortest-side"}),
        (
            "timm-swin",
            {"attention": {"type": "window", "mask_padding": False, "pad_order": "pad-then-shift"}},
        ),
        ("timm-swin", {"attention": {"type": "window", "mask_padding": True}}),
        ("timm-swinv2", {"pretrained_window_sizes": None}),
    ],
    ids=["clamp-shortest-side", "pad-then-shift", "masked-padding", "no-pretrained-window"],
)
def test_each_option_carries_structure(name: str, override: dict[str, Any]) -> None:
    """Each option the fixtures depend on computes something else when flipped: the fixtures
    would catch an implementation that ignored it."""
    fixture = load_reference(name)
    with torch.no_grad():
        assert max_abs_diff(converted(name, **override)(fixture.input), fixture.output) > 1e-3


def test_swinv2_set_input_size_is_timms() -> None:
    """Swin V2 moved to another input size and larger windows (``set_input_size``) computes what
    timm's own ``set_input_size`` gives: the continuous bias re-evaluates its MLP on the new
    offsets (normalised by the unchanged pre-training windows), so nothing is interpolated and
    the comparison is exact. (Swin V1's learned tables are resampled bicubically here; timm
    resamples them with BEiT's geometric-progression interpolation, so V1 is not compared.)"""
    fixture = load_reference("timm-swinv2-resized")
    model = vitzoo.build(swin_spec(fixture.meta)).eval()
    load_state_dict(model, fixture.state_dict, source="timm")
    resized = fixture.meta["resized"]
    model.set_input_size(resized["img_size"], window_sizes=resized["window_size"])
    assert_matches_fixture(model, fixture)


# -- Hugging Face ------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")

HF_TINY = dict(
    image_size=(40, 48),
    patch_size=2,
    embed_dim=6,
    depths=[2, 2, 2],
    num_heads=[2, 2, 4],
    window_size=5,
    mlp_ratio=2.0,
    num_labels=5,
)


def hf_model(v2: bool) -> torch.nn.Module:
    """A perturbed tiny HF Swin or Swinv2 (pre-trained at windows 2 and 3 in the first stages).

    Maps of 20 x 24, 10 x 12 and 5 x 6 with window 5: the first two stages pad (after the shift
    in Hugging Face's order) and shift; in the last, the shorter side fits one window, so the
    window becomes 5 x 5 and the shift is dropped on both axes. (Swinv2 sizes its windows from
    the config's image size halved with rounding down and from the first axis only; on these
    maps that is the same rule.)"""
    if v2:
        config = transformers.Swinv2Config(**HF_TINY, pretrained_window_sizes=[2, 3, 0])
        model = transformers.Swinv2ForImageClassification(config)
    else:
        model = transformers.SwinForImageClassification(transformers.SwinConfig(**HF_TINY))
    derived = {k: v.clone() for k, v in model.named_buffers()}  # offsets, indices: keep exact
    perturb_every_tensor(model)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(derived[name])
    return model.eval()


def hf_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).logits


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swinv2"])
def test_hf_folder_computes_the_same_function(tmp_path, v2: bool) -> None:
    """The saved folder (config.json -> spec; the files' tensor names) loads the same function."""
    from vitzoo.weights import load_pretrained

    theirs = hf_model(v2)
    theirs.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.conversion.unmatched_source == [] and loaded.conversion.missing_target == []
    x = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    label = "hf swinv2" if v2 else "hf swin"
    assert_same_function(loaded.model.eval(), theirs, x, forward_theirs=hf_logits, label=label)


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swinv2"])
def test_hf_in_memory_names_load_too(tmp_path, v2: bool) -> None:
    """transformers >= 5 renames Swin's tensors in memory (q_proj, mlp.fc1, ...); a state dict
    taken from a live model loads through the same converter."""
    theirs = hf_model(v2)
    theirs.save_pretrained(tmp_path)
    ours = vitzoo.build(weights=str(tmp_path)).eval()
    fresh = vitzoo.build(ours.vitzoo_spec).eval()
    load_state_dict(fresh, theirs.state_dict(), source="hf")
    x = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    label = "hf swinv2 in memory" if v2 else "hf swin in memory"
    assert_same_function(fresh, theirs, x, forward_theirs=hf_logits, label=label)


def test_hf_swin_shrinks_the_window_on_both_axes() -> None:
    """Hugging Face's Swin (unlike timm) shrinks the window to the shorter side on both axes and
    drops the shift, so its spec says so; with timm's rule the same weights compute otherwise."""
    from vitzoo_plugins.swin_weights import spec_from_hf_swin

    theirs = hf_model(v2=False)
    config = {**theirs.config.to_dict(), "architectures": ["SwinForImageClassification"]}
    spec = spec_from_hf_swin(config)
    assert spec["model"]["window_clamp"] == "shortest-side"
    spec["model"]["window_clamp"] = "per-axis"
    ours = vitzoo.build(spec).eval()
    load_state_dict(ours, theirs.state_dict(), source="hf")
    x = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert max_abs_diff(ours(x), hf_logits(theirs, x)) > 1e-3


# -- presets and full-size layouts ---------------------------------------------------------------
SWIN_PRESETS = sorted(
    n
    for n in vitzoo.get_registry().names("preset")
    if vitzoo.get_registry().get("preset", n).plugin == "swin"
)


def test_every_published_size_is_a_preset() -> None:
    assert len(SWIN_PRESETS) == 21, SWIN_PRESETS


@pytest.mark.parametrize("name", SWIN_PRESETS)
def test_preset_has_the_references_exact_parameter_count(name: str) -> None:
    entry = vitzoo.get_registry().get("preset", name)
    with torch.device("meta"):
        model = vitzoo.build(name)
    assert sum(p.numel() for p in model.parameters()) == entry.expected_params
    for alias in entry.aliases:
        assert vitzoo.get_registry().get("preset", alias).name == name


def released_layouts() -> dict[str, dict[str, dict[str, list[int]]]]:
    return json.loads(gzip.decompress((FIXTURE_DIR / "layouts.json.gz").read_bytes()))


#: Released checkpoints of other layouts than timm's (whose names are the presets' aliases):
#: (source kind, released name) -> preset.
RELEASES = {
    ("official", "swin_tiny_patch4_window7_224"): "swin-t",
    ("official", "swin_small_patch4_window7_224"): "swin-s",
    ("official", "swin_base_patch4_window7_224"): "swin-b",
    ("official", "swin_base_patch4_window12_384"): "swin-b-384",
    ("official", "swin_large_patch4_window7_224_22kto1k"): "swin-l",
    ("official", "swin_large_patch4_window12_384_22kto1k"): "swin-l-384",
    ("official", "swinv2_tiny_patch4_window8_256"): "swinv2-t-w8",
    ("official", "swinv2_small_patch4_window16_256"): "swinv2-s-w16",
    ("official", "swinv2_base_patch4_window12_192_22k"): "swinv2-b-w12-192",
    ("official", "swinv2_base_patch4_window12to24_192to384_22kto1k_ft"): "swinv2-b-w12to24-384",
    ("official", "swinv2_large_patch4_window12to16_192to256_22kto1k_ft"): "swinv2-l-w12to16-256",
    ("hf", "microsoft/swin-tiny-patch4-window7-224"): "swin-t",
    ("hf", "microsoft/swin-small-patch4-window7-224"): "swin-s",
    ("hf", "microsoft/swin-base-patch4-window7-224"): "swin-b",
    ("hf", "microsoft/swin-base-patch4-window12-384"): "swin-b-384",
    ("hf", "microsoft/swin-large-patch4-window7-224"): "swin-l",
    ("hf", "microsoft/swin-large-patch4-window12-384"): "swin-l-384",
    ("hf", "microsoft/swinv2-tiny-patch4-window8-256"): "swinv2-t-w8",
    ("hf", "microsoft/swinv2-tiny-patch4-window16-256"): "swinv2-t-w16",
    ("hf", "microsoft/swinv2-small-patch4-window8-256"): "swinv2-s-w8",
    ("hf", "microsoft/swinv2-small-patch4-window16-256"): "swinv2-s-w16",
    ("hf", "microsoft/swinv2-base-patch4-window8-256"): "swinv2-b-w8",
    ("hf", "microsoft/swinv2-base-patch4-window16-256"): "swinv2-b-w16",
    ("hf", "microsoft/swinv2-base-patch4-window12-192-22k"): "swinv2-b-w12-192",
    ("hf", "microsoft/swinv2-base-patch4-window12to16-192to256-22kto1k-ft"): "swinv2-b-w12to16-256",
    ("hf", "microsoft/swinv2-base-patch4-window12to24-192to384-22kto1k-ft"): "swinv2-b-w12to24-384",
    ("hf", "microsoft/swinv2-large-patch4-window12-192-22k"): "swinv2-l-w12-192",
    (
        "hf",
        "microsoft/swinv2-large-patch4-window12to16-192to256-22kto1k-ft",
    ): "swinv2-l-w12to16-256",
    (
        "hf",
        "microsoft/swinv2-large-patch4-window12to24-192to384-22kto1k-ft",
    ): "swinv2-l-w12to24-384",
}


def layout_cases() -> list[tuple[str, str, str]]:
    timm = [
        ("timm", alias, name)
        for name in SWIN_PRESETS
        for alias in vitzoo.get_registry().get("preset", name).aliases
    ]
    return sorted(
        timm + [(kind, released, preset) for (kind, released), preset in RELEASES.items()]
    )


@pytest.mark.parametrize(("source", "released", "preset"), layout_cases())
def test_full_size_release_maps_onto_its_preset(source: str, released: str, preset: str) -> None:
    """Every tensor of the full-size released layout lands on the preset (names and shapes,
    strictly; derived buffers declared unused), on the meta device."""
    from vitzoo.weights import pick_converter
    from vitzoo.weights.converter import raise_for_problems, target_shapes

    layout = released_layouts()[source][released]
    with torch.device("meta"):
        model = vitzoo.build(preset)
        tensors = {k: torch.empty(shape) for k, shape in layout.items()}
    converter = pick_converter(model.vitzoo_spec.model.type, source, tensors)
    assert converter.name == f"{source}-swin" and converter.recognises(tensors, {})
    shapes = target_shapes(model)
    raise_for_problems(converter.convert(tensors, shapes), shapes, f"{released} -> {preset}")
