"""AIMv2 computes timm's ``aimv2_*`` and transformers' ``Aimv2VisionModel`` function.

timm's tiny model (``tools/reference_fixtures/timm_deit3_aimv2.py``) at its own size and at a
second one (timm's dynamic_img_size and set_input_size); the HF model is built here. The vitzoo
model is the preset shrunk to the fixture's size (its RMSNorms, bias-free SwiGLU blocks and
patch norm are the preset's).
"""

from __future__ import annotations

import pytest
import torch
from fidelity import assert_matches_fixture, assert_same_function
from reference_data import load_reference, max_abs_diff
from resampling_helpers import at_two_sizes, tiny_preset

import vitzoo
from tests.weights_helpers import perturb_every_tensor
from vitzoo.errors import WeightsError
from vitzoo.weights import load_state_dict


def converted(**overrides):
    fixture = load_reference("timm-aimv2")
    model = tiny_preset("aimv2-l", fixture.meta, **{"model.mlp.hidden_dim": 44} | overrides)
    load_state_dict(model, fixture.state_dict, source="timm")
    return model, fixture


def test_timm_aimv2_at_its_size_and_resampled() -> None:
    model, fixture = converted()
    assert_matches_fixture(model, fixture, at_two_sizes(tuple(fixture.meta["second_size"])))


def test_official_aimv2_encoder(tmp_path) -> None:
    """apple/ml-aim's AIMv2VisionEncoder (its preprocessor / trunk layout, the SwiGLU's gate in
    ``fc1`` and value in ``fc3``): its tokens after post_trunk_norm, from a plain file whose
    layout is detected."""
    from safetensors.torch import save_file

    fixture = load_reference("official-aimv2")
    meta = fixture.meta
    timm_names = {"embed_dim": meta["embed_dim"], "depth": meta["num_blocks"]}
    spec = tiny_preset(
        "aimv2-l", meta | timm_names, **{"model.mlp.hidden_dim": meta["mlp_hidden_dim"]}
    ).vitzoo_spec
    path = tmp_path / "aimv2-large-patch14-224.safetensors"
    save_file({k: v.contiguous() for k, v in fixture.state_dict.items()}, str(path))
    model = vitzoo.build(spec, weights=str(path)).eval()
    assert_matches_fixture(model, fixture, lambda model, x: model.forward_features(x))


@pytest.mark.parametrize(
    "changed",
    [
        {"model.patch.norm": "layernorm"},
        {"model.norm": "layernorm"},
        {"model.pool": {"type": "cls"}, "model.class_token": True},
    ],
    ids=["patch-layernorm", "final-layernorm", "class-token"],
)
def test_each_aimv2_part_is_needed(changed: dict) -> None:
    """LayerNorm instead of RMSNorm (after the patches, at the end) or a class token: the
    released weights no longer fit (strict accounting names the tensor), or compute something
    else."""
    try:
        model, fixture = converted(**changed)
    except WeightsError:
        return
    with torch.no_grad():
        assert max_abs_diff(model(fixture.input), fixture.outputs["output.0"]) > 1e-3


# -- Hugging Face --------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")
from transformers.models.aimv2 import modeling_aimv2  # noqa: E402


def rms_norm_in_input_dtype(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """transformers' Aimv2RMSNorm, computed in the input's dtype: the same formula and order
    (x * rsqrt(mean(x^2) + eps), times the weight). transformers upcasts to float32 first -- a
    precision policy for half inputs -- which in a float64 run rounds every norm to float32;
    in float32 the two are the same operations."""
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


HF_TINY = dict(
    hidden_size=16,
    intermediate_size=44,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=24,
    patch_size=4,
    use_head=False,
)


def test_hf_aimv2_vision_model(tmp_path, monkeypatch) -> None:
    """The spec derived from config.json computes Aimv2VisionModel's tokens (after its final
    RMSNorm), every tensor perturbed."""
    from vitzoo.weights import load_pretrained

    monkeypatch.setattr(modeling_aimv2.Aimv2RMSNorm, "forward", rms_norm_in_input_dtype)
    hf = modeling_aimv2.Aimv2VisionModel(transformers.Aimv2VisionConfig(**HF_TINY))
    perturb_every_tensor(hf)
    hf.eval().save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.conversion.unmatched_source == [] and loaded.conversion.missing_target == []
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        spread = max_abs_diff(hf(pixel_values=x).last_hidden_state, hf(-x).last_hidden_state)
    assert spread > 1e-3, "vacuous: the outputs do not depend on the input"
    assert_same_function(
        loaded.model.eval(),
        hf,
        x,
        forward_ours=lambda model, x: model.forward_features(x),
        forward_theirs=lambda model, x: model(pixel_values=x).last_hidden_state,
        label="hf Aimv2VisionModel tokens",
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [({"use_head": True}, "attention-pooling head"), ({"is_native": True}, "native")],
)
def test_unsupported_hf_aimv2_variants_are_refused_plainly(tmp_path, change, match) -> None:
    from vitzoo.weights import load_pretrained

    config = transformers.Aimv2VisionConfig(**(HF_TINY | change))
    modeling_aimv2.Aimv2VisionModel(config).save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match=match):
        load_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("preset", "config"),
    [
        ("aimv2-l", dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=8)),
        ("aimv2-h-336", dict(hidden_size=1536, intermediate_size=4096, num_attention_heads=12)),
        ("aimv2-1b-448", dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=16)),
        ("aimv2-3b", dict(hidden_size=3072, intermediate_size=8192, num_attention_heads=24)),
    ],
)
def test_full_size_hf_layouts_fill_the_presets(preset: str, config: dict) -> None:
    """apple/aimv2-*-patch14-{224,336,448}'s configurations on the meta device: every tensor
    lands on the preset, names and shapes, and the derived spec builds the same shapes."""
    from vitzoo_plugins.aimv2_weights import HF_AIMV2

    from vitzoo.weights.converter import raise_for_problems, target_shapes

    size = int(preset.rsplit("-", 1)[-1]) if preset.count("-") == 2 else 224
    hf_config = transformers.Aimv2VisionConfig(
        **config, num_hidden_layers=24, image_size=size, patch_size=14, use_head=False
    )
    with torch.device("meta"):
        hf = modeling_aimv2.Aimv2VisionModel(hf_config)
        ours = vitzoo.build(preset)
        again = vitzoo.build(HF_AIMV2.spec_from_config(hf_config.to_dict()))
    shapes = target_shapes(ours)
    raise_for_problems(HF_AIMV2.convert(hf.state_dict(), shapes), shapes, preset)
    assert target_shapes(again) == shapes
