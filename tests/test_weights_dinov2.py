"""DINOv2 (with and without registers) computes the released models' function: timm's, the
official hub's and Hugging Face's, at the table's own size and at a second one.

Fixtures (``tools/reference_fixtures/timm_dinov2.py``, ``official_dinov2.py``) hold each
reference's tiny model with every tensor perturbed; the vitzoo model is the PRESET shrunk to
that size, so the presets' own options (LayerScale, the table's class row, how it resamples)
are what is tested. Hugging Face models are built here (transformers imports in the test env).
Every comparison follows ``fidelity``'s rule (float64 within 1e-9, float32 within 1e-5 x the
output's scale).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from fidelity import assert_matches_fixture, assert_matches_reference, run_in
from reference_data import load_reference, max_abs_diff
from resampling_helpers import at_two_sizes, crop, tiny_preset, tokens_at_two_sizes

import vitzoo
from tests.weights_helpers import perturb_every_tensor
from vitzoo.weights import load_state_dict

#: fixture -> (preset it shrinks, extra overrides)
TIMM = {
    "timm-dinov2": ("dinov2-s", {}),
    "timm-dinov2-reg4": ("dinov2-s-reg4", {}),
    "timm-dinov2-giant-reg4": ("dinov2-g-reg4", {"model.mlp.hidden_dim": 64}),
}
#: The hub models' own resampling (the presets resample as timm does).
HUB_PLAIN = {"model.posenc.antialias": False, "model.posenc.interpolate_offset": 0.1}
OFFICIAL = {
    "official-dinov2": ("dinov2-s", HUB_PLAIN),
    "official-dinov2-reg4-swiglu": ("dinov2-g-reg4", {"model.mlp.hidden_dim": 48}),
}


def converted(name: str, table: dict, source: str, dtype: torch.dtype = torch.float32):
    """The preset shrunk to the fixture, the fixture's weights loaded (converted in ``dtype``)."""
    fixture = load_reference(name)
    preset, extra = table[name]
    model = tiny_preset(preset, fixture.meta, **extra).to(dtype)
    load_state_dict(model, {k: v.to(dtype) for k, v in fixture.state_dict.items()}, source=source)
    return model, fixture


def assert_matches_folded(name: str, table: dict, source: str, forward) -> None:
    """The fixture's function in float32 and float64, each from weights converted in that
    precision. Where a converter folds the class token's table row into the class token (the
    official and HF layouts with registers, into timm's), the sum is taken in the weights'
    dtype: in float32 it rounds once (as timm's own converted checkpoints do), which float64's
    1e-9 would see (4e-8 here), so the float64 run converts the exactly upcast weights -- as a
    float64 user converting the release does."""
    for dtype in (torch.float32, torch.float64):
        model, fixture = converted(name, table, source, dtype)
        assert_matches_fixture(model, fixture, forward, dtypes=(dtype,))


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_dinov2_at_its_size_and_resampled(name: str) -> None:
    """timm's output at 24 px, and at 16 x 20 px both as timm's dynamic_img_size and as its
    set_input_size resample the table (bicubic, antialiased): the preset's defaults."""
    model, fixture = converted(name, TIMM, "timm")
    if "output" in fixture.outputs:  # recorded at its own size only
        assert_matches_fixture(model, fixture)
    else:
        assert_matches_fixture(model, fixture, at_two_sizes(tuple(fixture.meta["second_size"])))


def test_dynamic_img_size_resamples_as_timm_does() -> None:
    fixture = load_reference("timm-dinov2-reg4")
    model = tiny_preset("dinov2-s-reg4", fixture.meta, dynamic_img_size=True)
    load_state_dict(model, fixture.state_dict, source="timm")
    size = tuple(fixture.meta["second_size"])
    with torch.no_grad():
        out = model.double()(crop(fixture.input.double(), size))
    assert max_abs_diff(out, fixture.outputs64["output.1"]) <= 1e-9


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_hub_model_at_its_size_and_resampled(name: str) -> None:
    """The hub model's class token and patch tokens (registers out), at 24 px and at 16 x 20 px
    where its interpolate_pos_encoding resamples the table (offset 0.1, no antialias without
    registers; antialias, no offset with them); the ViT-g layout (w12 / w3) in block chunks."""
    size = tuple(load_reference(name).meta["second_size"])
    assert_matches_folded(name, OFFICIAL, "official", tokens_at_two_sizes(size))


@pytest.mark.parametrize(
    ("name", "source", "preset", "changed"),
    [
        ("official-dinov2", "official", "dinov2-s", HUB_PLAIN | {"model.posenc.antialias": True}),
        ("official-dinov2", "official", "dinov2-s", {"model.posenc.antialias": False}),
        ("timm-dinov2", "timm", "dinov2-s", {"model.posenc.antialias": False}),
        ("timm-dinov2", "timm", "dinov2-s", {"model.posenc.interpolation": "bilinear"}),
    ],
    ids=["hub-antialiased", "hub-without-offset", "timm-not-antialiased", "timm-bilinear"],
)
def test_each_resampling_option_is_needed(name, source, preset, changed) -> None:
    """At the second size, getting any one resampling setting wrong computes something else,
    far beyond the tolerance: each option carries real structure."""
    fixture = load_reference(name)
    model = tiny_preset(preset, fixture.meta, **changed)
    load_state_dict(model, fixture.state_dict, source=source)
    small = crop(fixture.input, tuple(fixture.meta["second_size"]))
    expected = fixture.outputs["output.2" if source == "official" else "output.1"]
    with torch.no_grad():
        assert max_abs_diff(model(small), expected) > 1e-3


def test_official_hub_linear_classifier_is_cls_mean() -> None:
    """dinov2_vits14_reg_lc(layers=1) -- the model card's linear probe: a Linear on [class token,
    mean of the patch tokens], registers out -- is the preset with ``pool: cls-mean`` and a
    linear head, at 24 px and at 16 x 20 px."""
    name = "official-dinov2-reg4-lc1"
    table = {name: ("dinov2-s-reg4", {"pool": {"type": "cls-mean"}})}
    size = tuple(load_reference(name).meta["second_size"])
    assert_matches_folded(name, table, "official", at_two_sizes(size, resized_copy=False))


def test_an_official_file_finds_the_official_converter(tmp_path: Path) -> None:
    """The user's path: a hub .pth/.safetensors in the official layout, loaded into the preset
    with the file format detected as a plain state dict (timm's converter does not recognise
    it, so the official one is chosen); the mask token is declared unused."""
    from safetensors.torch import save_file

    from vitzoo.weights import load_pretrained

    fixture = load_reference("official-dinov2-reg4-swiglu")
    path = tmp_path / "dinov2_vitg14_reg4_pretrain.safetensors"
    save_file({k: v.contiguous() for k, v in fixture.state_dict.items()}, str(path))
    spec = tiny_preset("dinov2-g-reg4", fixture.meta, **{"model.mlp.hidden_dim": 48}).vitzoo_spec
    loaded = load_pretrained(path, spec)
    assert loaded.converter == "official-dinov2-reg"
    assert set(loaded.conversion.unused) == {"mask_token"}
    size = tuple(fixture.meta["second_size"])
    assert_matches_fixture(  # float32: the fold rounds in float64 (see assert_matches_folded)
        loaded.model.eval(), fixture, tokens_at_two_sizes(size), dtypes=(torch.float32,)
    )


def test_registers_never_reach_the_pooled_features() -> None:
    """cls-mean averages the patch tokens only: changing the registers' output tokens (here,
    the learned registers) moves the class token, and the mean follows only through the
    patches; with the mean over every non-class token instead (transformers #37817), the
    pooled vector would differ from [cls, patch mean] computed by hand."""
    fixture = load_reference("timm-dinov2-reg4")
    model = tiny_preset("dinov2-s-reg4", fixture.meta, pool={"type": "cls-mean"}, num_classes=0)
    backbone = {k: v for k, v in fixture.state_dict.items() if not k.startswith("head.")}
    load_state_dict(model, backbone, source="timm")
    assert model.num_features == 2 * fixture.meta["embed_dim"]
    with torch.no_grad():
        tokens = model.forward_features(fixture.input)
        pooled = model.forward_head(tokens, pre_logits=True)
    patches = tokens[:, 1 + 4 :]
    assert torch.equal(pooled, torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1))
    assert max_abs_diff(pooled[:, 16:], tokens[:, 1:].mean(dim=1)) > 1e-3


# -- Hugging Face --------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")

HF_TINY = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=24,
    patch_size=4,
    layerscale_value=0.5,
)


def _hf_model(classifier: bool, registers: bool, swiglu: bool) -> torch.nn.Module:
    config_cls = transformers.Dinov2WithRegistersConfig if registers else transformers.Dinov2Config
    config = config_cls(**HF_TINY, use_swiglu_ffn=swiglu, num_labels=3)
    prefix = "Dinov2WithRegisters" if registers else "Dinov2"
    model_cls = getattr(
        transformers, prefix + ("ForImageClassification" if classifier else "Model")
    )
    model = model_cls(config)
    perturb_every_tensor(model)
    return model.eval()


def _hf_out(classifier: bool):
    def forward(model, x):
        out = model(pixel_values=x)
        return out.logits if classifier else out.last_hidden_state

    return forward


def _ours_out(classifier: bool):
    def forward(model, x):
        return model(x) if classifier else model.forward_features(x)

    return forward


def _in_each_precision(loaded, hf: torch.nn.Module) -> dict[torch.dtype, torch.nn.Module]:
    """The loaded model (float32) and the same spec with HF's weights converted in float64 (the
    registers' class-row fold is exact there; see ``assert_matches_folded``)."""
    from vitzoo.weights.selection import converters_for

    converter = next(c for c in converters_for("dinov2", "hf") if c.name == loaded.converter)
    ours64 = copy.deepcopy(loaded.model).double().eval()
    weights = {k: v.double() for k, v in hf.state_dict().items()}
    load_state_dict(ours64, weights, converter=converter)
    return {torch.float32: loaded.model.eval(), torch.float64: ours64}


def assert_same_as_hf(ours, hf, x, classifier: bool, label: str) -> None:
    """``fidelity``'s rule per precision, each side run in that precision."""
    with torch.no_grad():
        spread = max_abs_diff(_hf_out(classifier)(hf, x), _hf_out(classifier)(hf, -x))
    assert spread > 1e-3, "vacuous: the outputs do not depend on the input"
    for dtype, model in ours.items():
        expected = run_in(hf, x, dtype, _hf_out(classifier))["output"]
        actual = run_in(model, x, dtype, _ours_out(classifier))["output"]
        diff = assert_matches_reference(actual, expected, dtype=dtype, label=label)
        print(f"{label}: max abs diff {str(dtype)[6:]} {diff:.3g}")


@pytest.mark.parametrize(
    ("classifier", "registers", "swiglu"),
    [(True, False, False), (False, False, True), (True, True, True), (False, True, False)],
    ids=[
        "Dinov2ForImageClassification",
        "Dinov2Model-swiglu",
        "WithRegistersClassifier-swiglu",
        "Dinov2WithRegistersModel",
    ],
)
def test_hf_dinov2_at_its_size_and_resampled(tmp_path, classifier, registers, swiglu) -> None:
    """The spec derived from config.json computes the HF model's function: the classifiers'
    [class token, patch mean] (registers out), every token of the bare models, at 24 px and at
    16 x 20 px (HF resamples to the size, antialiased with registers)."""
    from vitzoo.weights import load_pretrained

    hf = _hf_model(classifier, registers, swiglu)
    hf.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.conversion.unmatched_source == [] and loaded.conversion.missing_target == []
    assert loaded.model.vitzoo_spec.model.pool.type == ("cls-mean" if classifier else "cls")
    ours = _in_each_precision(loaded, hf)
    torch.manual_seed(0)
    for size in ((24, 24), (16, 20)):
        x = torch.randn(2, 3, *size)
        label = f"hf dinov2{' reg' if registers else ''} at {size}"
        assert_same_as_hf(ours, hf, x, classifier, label)


@pytest.mark.parametrize("registers", [False, True], ids=["Dinov2", "Dinov2WithRegisters"])
def test_hf_weights_adapt_to_another_image_size_as_hf_resamples(tmp_path, registers) -> None:
    """Built at 16 x 20 px from 24-px weights, the table is resampled once at load the way the
    model itself resamples (plain bicubic for Dinov2, antialiased with registers): HF's own
    per-call resampling at 16 x 20 px."""
    from vitzoo.weights import load_pretrained

    hf = _hf_model(classifier=True, registers=registers, swiglu=False)
    hf.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path, overrides={"image_size": [16, 20]})
    assert any("position tables resampled" in note for note in loaded.notes)
    model = loaded.model.eval()
    # float64 without registers only: with them the class-row fold rounds in float32
    # (assert_matches_folded), and the adapted load has no float64 path
    ours = {torch.float32: model} if registers else {torch.float32: model, torch.float64: model}
    assert_same_as_hf(ours, hf, torch.randn(2, 3, 16, 20), True, "hf dinov2 adapted")


@pytest.mark.parametrize(
    ("preset", "registers", "extra"),
    [
        ("dinov2-s", False, dict(hidden_size=384, num_attention_heads=6)),
        ("dinov2-b", False, dict(hidden_size=768, num_attention_heads=12)),
        ("dinov2-l", True, dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)),
        (
            "dinov2-g-reg4",
            True,
            dict(
                hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True
            ),
        ),
    ],
)
def test_full_size_hf_layouts_fill_the_presets(preset: str, registers: bool, extra: dict) -> None:
    """facebook/dinov2-{small,base,large,giant}(-with-registers)'s configurations, built on the
    meta device: every tensor lands on the preset (the *-reg4 preset for the registers' one),
    names and shapes, and the derived spec is the preset's model."""
    from vitzoo.weights.converter import raise_for_problems, target_shapes
    from vitzoo.weights.selection import converters_for

    if registers and not preset.endswith("reg4"):
        preset += "-reg4"
    cls = transformers.Dinov2WithRegistersConfig if registers else transformers.Dinov2Config
    config = cls(image_size=518, patch_size=14, **extra)
    model_cls = transformers.Dinov2WithRegistersModel if registers else transformers.Dinov2Model
    with torch.device("meta"):
        hf = model_cls(config)
        ours = vitzoo.build(preset)
    shapes = target_shapes(ours)
    (converter,) = [
        c for c in converters_for("dinov2", "hf") if config.model_type in c.config_names
    ]
    raise_for_problems(converter.convert(hf.state_dict(), shapes), shapes, preset)
    derived = converter.spec_from_config({**config.to_dict(), "architectures": ["Dinov2Model"]})
    with torch.device("meta"):
        again = vitzoo.build(derived)
    assert target_shapes(again) == shapes
