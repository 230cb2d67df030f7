"""Swin and Swin V2: the released layouts load and compute the references' functions.

* timm (``timm-swin``, ``timm-swinv2``) and the official Microsoft layout (``official-swin``,
  ``official-swinv2``): reference fixtures (``tools/reference_fixtures/swin.py``): a non-square
  input whose stage maps no window tiles (every block pads), shifted blocks in every stage, and a
  stage where one axis fits in a window (timm shrinks it and drops that axis' shift); Swin V2
  fine-tuned at windows larger than its pre-training ones.
* Hugging Face (``Swin*``, ``Swinv2*``): the tiny model is built here, perturbed, and read both
  from its saved folder (the files' names) and from memory (transformers >= 5's names).
* Every timm model name is a preset of its own (their exact counts: tests/test_presets.py; the
  full-size released layouts, timm, official and Hugging Face: tests/test_weights_timm.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fidelity import assert_matches_fixture, assert_same_function
from reference_data import load_reference, max_abs_diff

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


def test_swin_set_input_size_with_larger_windows_is_timms() -> None:
    """Swin (V1) moved to 52 x 60 with windows of 6 computes what timm's own ``set_input_size``
    gives: every learned table resampled with BEiT's geometric offsets (the presets' default,
    ``attention.table_resampling: geometric``), bit-equal to timm's tables; the Microsoft code's
    bicubic recipe (the other option) computes something else there."""
    before = load_reference("timm-swin")
    moved = load_reference("timm-swin-resized")
    resized = moved.meta["resized"]
    windows = [resized["window_size"][0]] * len(before.meta["depths"])  # timm's (h, w): every stage
    model = converted("timm-swin")
    model.set_input_size(tuple(resized["img_size"]), window_sizes=windows)
    ours = model.state_dict()
    tables = [k for k in moved.state_dict if k.endswith("relative_position_bias_table")]
    assert len(tables) == sum(before.meta["depths"])
    for key in tables:  # timm's layers.{i}.blocks.{j}.attn.X -> stages ... relative_position.X
        table = key.replace("layers.", "stages.").replace("attn.", "attn.relative_position.")
        assert torch.equal(ours[table], moved.state_dict[key]), key
    assert_matches_fixture(model, moved)
    bicubic = converted(
        "timm-swin",
        attention={"type": "window", "mask_padding": False, "table_resampling": "bicubic"},
    )
    bicubic.set_input_size(tuple(resized["img_size"]), window_sizes=windows)
    with torch.no_grad():
        assert max_abs_diff(bicubic(moved.input), moved.output) > 1e-3


def test_swinv2_set_input_size_is_timms() -> None:
    """Swin V2 moved to another input size and larger windows (``set_input_size``) computes what
    timm's own ``set_input_size`` gives: the continuous bias re-evaluates its MLP on the new
    offsets (normalised by the unchanged pre-training windows), so nothing is interpolated and
    the comparison is exact."""
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same model whichever tests ran before
        if v2:
            config = transformers.Swinv2Config(**HF_TINY, pretrained_window_sizes=[2, 3, 0])
            model = transformers.Swinv2ForImageClassification(config)
        else:
            model = transformers.SwinForImageClassification(transformers.SwinConfig(**HF_TINY))
    derived = {k: v.clone() for k, v in model.named_buffers()}  # offsets, indices: keep exact
    # Weight noise 1/sqrt(fan-in) rather than the helper's 1.5: at 1.5, Swin V2's post-norm
    # LayerNorms (of attention outputs with little variance) amplify float32 rounding to ~4e-5
    # on logits of 3 for some draws, an ill-conditioned function rather than a different one
    # (float64 agrees to 1e-14 there); at 1.0 float32 agrees to <= 8e-6 over eight draws.
    perturb_every_tensor(model, weight_scale=1.0)
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


# -- presets ---------------------------------------------------------------------------------------
SWIN_PRESETS = sorted(
    n
    for n in vitzoo.get_registry().names("preset")
    if vitzoo.get_registry().get("preset", n).plugin == "swin"
)

#: Every timm Swin / Swin V2 model (``timm.list_models("swin*")`` in timm 1.0, less the
#: ``swinv2_cr_*`` family: timm's own re-implementation with another block and no Microsoft
#: release). The exact parameter counts and the full-size layouts of the releases are checked for
#: every preset by tests/test_presets.py and tests/test_weights_timm.py.
TIMM_NAMES = [
    "swin_tiny_patch4_window7_224",
    "swin_small_patch4_window7_224",
    "swin_base_patch4_window7_224",
    "swin_large_patch4_window7_224",
    "swin_base_patch4_window12_384",
    "swin_large_patch4_window12_384",
    "swin_s3_tiny_224",
    "swin_s3_small_224",
    "swin_s3_base_224",
    "swinv2_tiny_window8_256",
    "swinv2_tiny_window16_256",
    "swinv2_small_window8_256",
    "swinv2_small_window16_256",
    "swinv2_base_window8_256",
    "swinv2_base_window16_256",
    "swinv2_base_window12_192",
    "swinv2_base_window12to16_192to256",
    "swinv2_base_window12to24_192to384",
    "swinv2_large_window12_192",
    "swinv2_large_window12to16_192to256",
    "swinv2_large_window12to24_192to384",
]


def test_every_timm_name_is_a_preset_of_its_own() -> None:
    registry = vitzoo.get_registry()
    presets = {registry.get("preset", name).name for name in TIMM_NAMES}
    assert presets == set(SWIN_PRESETS) and len(presets) == len(TIMM_NAMES)


def hf_releases() -> list[tuple[str, str]]:
    registry = vitzoo.get_registry()
    return sorted(
        (release.name, name)
        for name in SWIN_PRESETS
        for release in registry.get("preset", name).released
        if release.source == "hf"
    )


def hf_file_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors as a saved folder names them (transformers >= 5 renames Swin's in memory and
    reverts that on save; older versions name them so in memory)."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return model.state_dict()
    return revert_weight_conversion(model, model.state_dict())


@pytest.mark.parametrize(("released", "preset"), hf_releases())
def test_full_size_hf_release_maps_onto_its_preset(released: str, preset: str) -> None:
    """microsoft/swin* at full size (the transformers model of the preset's configuration, on the
    meta device; the files' tensor names): config.json gives the preset's spec and every tensor
    lands on it, strictly. The tiny models above prove the function."""
    from vitzoo_plugins.swin_weights import HF_SWIN

    from vitzoo.spec import spec_to_dict
    from vitzoo.weights.converter import raise_for_problems, target_shapes
    from vitzoo.weights.load import spec_differences

    spec = vitzoo.resolve_spec(preset).model
    v2 = spec.type == "swinv2"
    kwargs = dict(
        image_size=spec.image_size,
        embed_dim=spec.dims[0],
        depths=spec.depths,
        num_heads=spec.num_heads,
        window_size=spec.window_sizes[0],
        num_labels=spec.num_classes,
    )
    with torch.device("meta"):
        if v2:
            pretrained = spec.pretrained_window_sizes or [0] * len(spec.depths)
            config = transformers.Swinv2Config(**kwargs, pretrained_window_sizes=pretrained)
            theirs = transformers.Swinv2ForImageClassification(config)
        else:
            theirs = transformers.SwinForImageClassification(transformers.SwinConfig(**kwargs))
        tensors = hf_file_state(theirs)
    hf_config = {**config.to_dict()} if v2 else theirs.config.to_dict()
    hf_config["architectures"] = [type(theirs).__name__]
    derived = spec_to_dict(vitzoo.resolve_spec(HF_SWIN.spec_from_config(hf_config)))["model"]
    ours = spec_to_dict(vitzoo.resolve_spec(preset))["model"]
    # the derived spec differs from the preset only in Hugging Face's window rule and padding
    # order (the same on these square maps) and in training-only settings
    allowed = {"window_clamp", "attention.pad_order", "drop_path_rate"}
    differing = {d.split("=")[0].removeprefix("model.") for d in spec_differences(derived, ours)}
    assert differing <= allowed, differing
    with torch.device("meta"):
        model = vitzoo.build(preset)
    assert HF_SWIN.recognises(tensors, {})
    shapes = target_shapes(model)
    raise_for_problems(HF_SWIN.convert(tensors, shapes), shapes, f"{released} -> {preset}")


# -- the new parts outside Swin ------------------------------------------------------------------
def test_cosine_attention_qv_bias_and_post_norm_work_in_a_flat_vit() -> None:
    """The V2 options are options of the shared parts, not of Swin: a plain ViT takes them, and
    every new parameter learns (the key has no bias to learn)."""
    from vitzoo.registration_examples import TINY_VIT

    spec = {
        "model": {
            "type": "vit",
            **TINY_VIT,
            "attention": {"type": "mhsa", "cosine": True, "key_bias": False},
            "block": {"type": "pre-norm", "norm_position": "res-post"},
        }
    }
    model = vitzoo.build(spec)
    attn = model.blocks[0].attn
    assert attn.qkv.bias is None and attn.q_bias.shape == attn.v_bias.shape == (32,)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for name in ("logit_scale", "q_bias", "v_bias"):
        assert getattr(attn, name).grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"type": "vit", "attention": {"type": "lsa", "cosine": True}}, "cosine"),
        ({"type": "vit", "attention": {"type": "lsa", "key_bias": False}}, "key_bias"),
        (
            {"type": "deepvit", "block": {"type": "deepvit", "norm_position": "res-post"}},
            "norm_position",
        ),
    ],
    ids=["cosine-in-lsa", "qv-bias-in-lsa", "res-post-in-deepvit-block"],
)
def test_options_are_refused_where_the_part_would_ignore_them(
    model: dict[str, Any], field: str
) -> None:
    """An attention that computes its weights its own way (LSA) or a block with its own forward
    (DeepViT's) refuses the shared options at spec time, naming the field."""
    from vitzoo.spec import SpecError

    with pytest.raises(SpecError, match=field):
        vitzoo.resolve_spec({"model": model})


def test_shifted_window_attention_in_a_flat_vit_masks_the_wrapped_tokens() -> None:
    """The window attention's shift works on any patch grid: in a plain ViT (8 x 8 grid, windows
    of 4 shifted by 2), a token's output does not depend on tokens that only reach its window by
    wrapping around the map."""
    from vitzoo.registration_examples import GRID_ONLY_HOST, TINY_VIT

    attention = {"type": "window", "window_size": 4, "shift_size": 2}
    spec = {"model": {"type": "vit", **TINY_VIT, **GRID_ONLY_HOST, "image_size": 64, "depth": 1}}
    spec["model"]["attention"] = attention
    attn = vitzoo.build(spec).eval().blocks[0].attn
    x = torch.randn(1, 8, 8, 32, requires_grad=True)
    attn.forward_map(x)[0, 0, 0].sum().backward()  # token (0, 0): its window wraps around
    reached = x.grad[0].abs().sum(-1) > 0
    # rolled by -2, token (0, 0) sits at (6, 6) of the last window, whose other rows / columns
    # 4-5 are tokens 6-7 of the map; those and (0, 0)'s own wrapped block (rows / cols 0-1) are
    # separate regions, so only the tokens of rows 0-1 x cols 0-1 reach it
    assert reached[:2, :2].all() and reached.sum() == 4
