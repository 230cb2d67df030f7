"""timm (and official CCT) checkpoints load into vitzoo and compute the same function.

Each case reads a reference fixture (``tools/make_reference_fixtures.py``: the peer's own
constructor at a tiny size, every tensor perturbed, a fixed input and the peer's eval output),
builds the vitzoo model from a spec derived from the fixture's constructor arguments, loads the
peer's state dict through the family's registered converter (strict: every tensor on both sides
accounted for) and requires the same outputs by ``fidelity``'s rule (float64 within 1e-9, float32
within 1e-5 x the output's scale). Distilled models are compared on both heads and on the eval
output (their mean).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
from fidelity import assert_matches_fixture, call
from reference_data import ReferenceFixture, load_reference, max_abs_diff

import vitzoo
from vitzoo.weights import load_state_dict


def vit_spec(meta: dict[str, Any], model_type: str = "vit") -> dict[str, Any]:
    return {
        "model": {
            "type": model_type,
            "image_size": meta["img_size"],
            "num_classes": meta["num_classes"],
            "dim": meta["embed_dim"],
            "depth": meta["depth"],
            "num_heads": meta["num_heads"],
            "patch": {"type": "linear", "patch_size": meta["patch_size"]},
        }
    }


def cait_spec(meta: dict[str, Any]) -> dict[str, Any]:
    spec = vit_spec(meta, "cait")
    spec["model"]["cls_depth"] = meta["depth_token_only"]
    return spec


def pit_spec(meta: dict[str, Any], distilled: bool = False) -> dict[str, Any]:
    model = {
        "type": "pit",
        "image_size": meta["img_size"],
        "num_classes": meta["num_classes"],
        "patch_size": meta["patch_size"],
        "stride": meta["stride"],
        "base_dims": meta["base_dims"],
        "depths": meta["depth"],
        "num_heads": meta["heads"],
    }
    if distilled:
        model |= {"distillation_token": True, "head": {"type": "distillation"}}
    return {"model": model}


def twins_spec(meta: dict[str, Any]) -> dict[str, Any]:
    stages = len(meta["embed_dims"])
    return {
        "model": {
            "type": "twins-svt",
            "image_size": meta["img_size"],
            "num_classes": meta["num_classes"],
            "dims": meta["embed_dims"],
            "depths": meta["depths"],
            "num_heads": meta["num_heads"],
            "patch_sizes": [meta["patch_size"]] + [2] * (stages - 1),
            "windows": meta["wss"],
            "sr_ratios": meta["sr_ratios"],
            "mlp": {"type": "mlp", "ratio": float(meta["mlp_ratios"][0])},
        }
    }


def pcpvt_spec(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "type": "twins-pcpvt",
            "image_size": meta["img_size"],
            "num_classes": meta["num_classes"],
            "dims": meta["embed_dims"],
            "depths": meta["depths"],
            "num_heads": meta["num_heads"],
            "patch_sizes": [meta["patch_size"]] + [2] * (len(meta["depths"]) - 1),
            "sr_ratios": meta["sr_ratios"],
            "mlp_ratios": meta["mlp_ratios"],
        }
    }


def nest_spec(meta: dict[str, Any]) -> dict[str, Any]:
    levels = meta["num_levels"]
    tokens = meta["img_size"] // meta["patch_size"]
    return {
        "model": {
            "type": "nest",
            "image_size": meta["img_size"],
            "num_classes": meta["num_classes"],
            "patch_size": meta["patch_size"],
            # timm: the first level has 4^(levels-1) blocks, so a block spans tokens / 2^(levels-1)
            "block_size": tokens // 2 ** (levels - 1),
            "dims": meta["embed_dims"],
            "depths": meta["depths"],
            "num_heads": meta["num_heads"],
            "padding": "same" if meta.get("pad_type") == "same" else "symmetric",
        }
    }


def mobilevit_spec(meta: dict[str, Any]) -> dict[str, Any]:
    stages = meta["stages"]  # (kind, depth, channels, stride, expansion, t_dim, t_depth)
    return {
        "model": {
            "type": "mobilevit",
            "image_size": meta["img_size"],
            "num_classes": meta["num_classes"],
            "stem_dim": meta["stem_chs"],
            "channels": [s[2] for s in stages],
            "mv2_blocks": [s[1] for s in stages],
            "strides": [s[3] for s in stages],
            "transformer_dims": [s[5] for s in stages],
            "transformer_depths": [s[6] for s in stages],
            "expand_ratio": stages[0][4],
            "patch_size": meta["patch_size"],
            "final_dim": meta["num_features"],
        }
    }


def cct_spec(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "type": "cct",
            "image_size": meta["img_size"],
            "num_classes": meta["num_classes"],
            "dim": meta["embedding_dim"],
            "depth": meta["num_layers"],
            "num_heads": meta["num_heads"],
            "mlp": {"type": "mlp", "ratio": meta["mlp_ratio"]},
            "patch": {
                "type": "conv-tokenizer",
                "num_layers": meta["n_conv_layers"],
                "kernel_size": meta["kernel_size"],
                "stride": meta["stride"],
                "padding": meta["padding"],
            },
        }
    }


#: fixture name -> (spec from the fixture's meta, converter source kind)
CASES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "timm-vit": (vit_spec, "timm"),
    "timm-deit": (vit_spec, "timm"),
    "timm-deit-distilled": (lambda m: vit_spec(m, "deit"), "timm"),
    "timm-cait": (cait_spec, "timm"),
    "timm-pit": (pit_spec, "timm"),
    "timm-pit-distilled": (lambda m: pit_spec(m, distilled=True), "timm"),
    "timm-twins": (twins_spec, "timm"),
    "timm-twins-pcpvt": (pcpvt_spec, "timm"),
    "timm-nest": (nest_spec, "timm"),
    "timm-nest-pytorch-padded": (nest_spec, "timm"),
    "timm-mobilevit": (mobilevit_spec, "timm"),
    "official-cct": (cct_spec, "official"),
}


def converted(name: str) -> tuple[torch.nn.Module, Any]:
    fixture = load_reference(name)
    spec_of, source = CASES[name]
    model = vitzoo.build(spec_of(fixture.meta)).eval()
    load_state_dict(model, fixture.state_dict, source=source)
    return model, fixture


def both_heads(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class-head, distillation-head) logits of an eval-mode model: the distillation head returns
    the pair in training mode, so only the head is switched (no dropout elsewhere changes)."""
    model.head.train()
    try:
        return model(x)
    finally:
        model.head.eval()


def heads_and_eval_output(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A distilled model's outputs by the fixture's names: class head, distillation head, eval
    output (their mean)."""
    cls_logits, dist_logits = both_heads(model, x)
    return {"output.0": cls_logits, "output.1": dist_logits, "output.2": model(x)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_model_matches_reference_output(name: str) -> None:
    model, fixture = converted(name)
    distilled = "output" not in fixture.outputs
    assert_matches_fixture(model, fixture, heads_and_eval_output if distilled else call)


def eval_output_only(fixture: ReferenceFixture) -> ReferenceFixture:
    """The fixture with only its eval-mode output (``output``; ``output.2`` of a distilled one)."""

    def pick(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"output": outputs.get("output", outputs.get("output.2"))}

    return replace(fixture, outputs=pick(fixture.outputs), outputs64=pick(fixture.outputs64))


@pytest.mark.parametrize("name", sorted(CASES))
def test_only_the_own_familys_converter_recognises_a_fixture(name: str) -> None:
    """A checkpoint of one family must not look like another's (the "looks like X" errors and
    format detection rely on it). timm-vit's detector is deliberately loose (any checkpoint
    with a patch embedding and a qkv, so a ViT with extra tensors gets the strict list of
    unmatched keys); the converter of the model's own family is tried first, so it is left out."""
    from vitzoo.weights import converters_for

    fixture = load_reference(name)
    spec_of, source = CASES[name]
    family = spec_of(fixture.meta)["model"]["type"]
    recognising = {
        arch
        for converter in converters_for(source=source)
        if converter.recognises(fixture.state_dict, {})
        and (converter.name != "timm-vit" or family in converter.architectures)
        for arch in converter.architectures
    }
    # One converter may fill several vitzoo types (timm's ViT and DeiT, Twins SVT and PCPVT
    # are one class there).
    own = converters_for(family, source)
    allowed = {arch for converter in own for arch in converter.architectures}
    assert family in recognising
    assert recognising <= allowed, f"{name} also looks like {sorted(recognising - allowed)}"


def test_distilled_pit_returns_both_heads_in_training_and_their_mean_in_eval() -> None:
    model, fixture = converted("timm-pit-distilled")
    model.train()
    cls_logits, dist_logits = model(fixture.input)
    (cls_logits.sum() + dist_logits.sum()).backward()
    assert model.cls_token.grad is not None and model.cls_token.grad[:, 1].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        mean = model(fixture.input)
    assert torch.allclose(mean, (cls_logits + dist_logits).detach() / 2, atol=1e-6)
    with torch.no_grad():
        pre_logits = model.forward_head(model.forward_features(fixture.input), pre_logits=True)
    assert pre_logits.shape == (fixture.input.shape[0], model.num_features)


@pytest.mark.parametrize(
    "override",
    [{"padding": "symmetric"}, {"attention": {"type": "mhsa", "head_merge": "head-major"}}],
    ids=["pytorch-padded-pool", "head-major-merge"],
)
def test_each_nest_option_is_needed_for_the_released_function(override: dict[str, Any]) -> None:
    """Without TF-SAME pooling or with the usual head merge, timm's NesT weights compute
    something else (0.25 and 2.3 off on this fixture): both options carry real structure."""
    fixture = load_reference("timm-nest")
    spec = nest_spec(fixture.meta)
    spec["model"] |= override
    model = vitzoo.build(spec).eval()
    load_state_dict(model, fixture.state_dict, source="timm")
    with torch.no_grad():
        assert max_abs_diff(model(fixture.input), fixture.output) > 1e-2


def test_twins_attends_the_window_padding_as_the_reference_does() -> None:
    """At 40 px the LSA windows do not tile the maps; masking the zero padding out (the window
    attention's default) computes something else than Twins' reference."""
    from vitzoo.components.windows import WindowAttention

    model, fixture = converted("timm-twins")
    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.mask_padding = True
    with torch.no_grad():
        assert max_abs_diff(model(fixture.input), fixture.output) > 1e-2


def released_layouts() -> dict[str, dict[str, dict[str, list[int]]]]:
    """Full-size state-dict layouts (key -> shape) of the released models, source kind -> name ->
    layout, written by ``tools/make_reference_layouts.py`` from the references' own constructors
    (the timm names it builds are the catalogue's ``released: {timm: ...}``)."""
    import gzip
    import json

    from reference_data import FIXTURE_DIR

    return json.loads(gzip.decompress((FIXTURE_DIR / "layouts.json.gz").read_bytes()))


def released_by() -> dict[tuple[str, str], str]:
    """(source kind, released name) -> the preset that lists it under ``released``."""
    return {
        (release.source, release.name): preset.name
        for preset in vitzoo.get_registry().entries("preset")
        for release in preset.released
    }


def layout_cases() -> list[tuple[str, str, str | None]]:
    """(source kind, released name, format given) for every layout: a plain state-dict file is
    detected as timm's format, so an official release also runs with its format given."""
    cases: list[tuple[str, str, str | None]] = []
    for source, names in sorted(released_layouts().items()):
        for name in sorted(names):
            cases += [(source, name, None)] + ([(source, name, source)] if source != "timm" else [])
    return cases


def test_every_released_timm_and_official_name_has_a_full_size_layout() -> None:
    """The full-size test below covers every timm / official release a preset claims (Hugging
    Face releases are proven on tiny models built from their configs, tests/test_weights_hf.py)."""
    claimed = {key for key in released_by() if key[0] in ("timm", "official")}
    have = {(source, name) for source, name, _ in layout_cases()}
    assert claimed - have == set(), "rerun tools/make_reference_layouts.py in the reference env"


@pytest.mark.parametrize(("source", "released", "fmt"), layout_cases())
def test_full_size_release_loads_into_its_preset(
    source: str, released: str, fmt: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``vitzoo.build(PRESET, weights=FILE)`` with the full-size released state dict, on the meta
    device (nothing is allocated): the file read as a plain state dict (format detected, or the
    release's source kind given), the converter chosen among the named architecture's own, every
    tensor on both sides accounted for, names and shapes. The tiny fixtures prove the function;
    this proves that the presets are the released models and that the choice finds their
    converter (timm's full-size twins_pcpvt_small was once refused by twins-pcpvt-s)."""
    from vitzoo.weights import load as load_module
    from vitzoo.weights.converter import target_shapes
    from vitzoo.weights.sources import WeightsSource

    preset = released_by().get((source, released))
    assert preset, f"{released}: no preset lists it under released {source}"
    layout = released_layouts()[source][released]
    with torch.device("meta"):
        tensors = {k: torch.empty(shape) for k, shape in layout.items()}

        def read_meta(location: str, format: str | None = None) -> WeightsSource:
            return WeightsSource(str(location), format or "timm", tensors)

        monkeypatch.setattr(load_module, "read_source", read_meta)
        loaded = load_module.load_pretrained(
            f"{released}.pth", preset, format=fmt, log=lambda line: None
        )
    converter = vitzoo.get_registry().get("converter", loaded.converter)
    assert converter.source == source
    assert converter.recognises(tensors, {})
    assert loaded.conversion.problems(target_shapes(loaded.model)) == []


def test_a_converter_that_assumes_a_release_says_so_on_every_load(tmp_path) -> None:
    """timm's PyTorch-padded nest_tiny has nest_tiny_jx's keys and shapes but computes another
    function: loaded into the released models' spec (TF-SAME pooling) it loads without a
    complaint and differs. Keys cannot tell the two apart, so every load says which release it
    took the checkpoint for."""
    from safetensors.torch import save_file

    from vitzoo.weights import load_pretrained

    padded = load_reference("timm-nest-pytorch-padded")
    jx_spec = nest_spec({**padded.meta, "pad_type": "same"})  # what the nest presets build
    path = tmp_path / "nest_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in padded.state_dict.items()}, str(path))
    lines: list[str] = []
    loaded = load_pretrained(path, jx_spec, log=lines.append)
    with torch.no_grad():
        assert max_abs_diff(loaded.model.eval()(padded.input), padded.output) > 1e-2
    assumed = [line for line in loaded.notes if "nest_*_jx" in line]
    assert len(assumed) == 1 and assumed[0] in lines
    assert "'timm-nest'" in assumed[0] and "nest_tiny/small/base" in assumed[0]
    assert "model.padding=symmetric" in assumed[0]  # ... and how to build the other one
    # the one-call load (tests, notebooks) says it too; a converter assuming nothing is silent
    said: list[str] = []
    load_state_dict(vitzoo.build(jx_spec), padded.state_dict, source="timm", log=said.append)
    assert said == assumed
    vit = load_reference("timm-vit")
    load_state_dict(vitzoo.build(vit_spec(vit.meta)), vit.state_dict, log=said.append)
    assert said == assumed


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_saved_reference_checkpoint_loads_through_build_weights(name: str, tmp_path) -> None:
    """The user's path: a checkpoint file in the reference's own layout, format and converter
    detected by ``vitzoo.build(spec, weights=FILE)``."""
    from safetensors.torch import save_file

    fixture = load_reference(name)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in fixture.state_dict.items()}, str(path))
    model = vitzoo.build(CASES[name][0](fixture.meta), weights=str(path)).eval()
    assert_matches_fixture(model, eval_output_only(fixture))
