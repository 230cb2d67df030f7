"""BEiT / BEiT v2 from Hugging Face (issue 22): ``BeitForImageClassification`` and ``BeitModel``
load into vitzoo's ``beit`` and compute the same function.

Tiny random models are built here (transformers imports in the test env), every tensor
perturbed, saved with ``save_pretrained`` and loaded through vitzoo with the spec derived from
``config.json``; both sides run, compared in float32 and float64 by ``fidelity``'s rule.
Nothing is downloaded; the full-size layouts are built on the meta device.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from fidelity import assert_same_function
from weights_helpers import max_abs_diff, perturb_every_tensor

import vitzoo
from vitzoo.errors import WeightsError
from vitzoo.weights import converters_for, load_pretrained, load_state_dict

transformers = pytest.importorskip("transformers")

SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    num_labels=3,
    use_relative_position_bias=True,
)
#: BEiT's other switches: class-token pooling after a final LayerNorm, no LayerScale, absolute
#: positions beside the bias, a mask token (pre-training only).
OTHER_SWITCHES = dict(
    use_mean_pooling=False,
    layer_scale_init_value=0.0,
    use_absolute_position_embeddings=True,
    use_mask_token=True,
)


def saved(model_cls: str, folder, **config: Any) -> torch.nn.Module:
    torch.manual_seed(0)  # HF's random init, so the figures are the same every run
    model = getattr(transformers, model_cls)(transformers.BeitConfig(**{**SMALL, **config}))
    perturb_every_tensor(model)
    model.eval().save_pretrained(folder)
    return model


@pytest.mark.parametrize("switches", [{}, OTHER_SWITCHES], ids=["fine-tune", "other-switches"])
def test_hf_beit_for_image_classification(tmp_path, switches: dict[str, Any]) -> None:
    hf_model = saved("BeitForImageClassification", tmp_path, **switches)
    loaded = load_pretrained(tmp_path)
    assert loaded.conversion.unmatched_source == [] and loaded.conversion.missing_target == []
    x, other = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        spread = max_abs_diff(hf_model(pixel_values=x).logits, hf_model(pixel_values=other).logits)
    assert spread > 1e-2, "the comparison is vacuous: logits do not depend on the input"
    assert_same_function(
        loaded.model.eval(),
        hf_model,
        x,
        forward_theirs=lambda model, x: model(pixel_values=x).logits,
        label=f"hf BeitForImageClassification ({'other switches' if switches else 'fine-tune'})",
    )


@pytest.mark.parametrize("switches", [{}, OTHER_SWITCHES], ids=["fine-tune", "other-switches"])
def test_hf_bare_beit_model_gives_the_same_tokens_and_pooled_vector(tmp_path, switches) -> None:
    hf_model = saved("BeitModel", tmp_path, **switches)
    loaded = load_pretrained(tmp_path)
    assert loaded.model.num_classes == 0
    x = torch.randn(2, 3, 32, 32)
    assert_same_function(
        loaded.model.eval(),
        hf_model,
        x,
        forward_ours=lambda model, x: {
            "tokens": (tokens := model.forward_features(x)),
            "pooled": model.forward_head(tokens, pre_logits=True),
        },
        forward_theirs=lambda model, x: {
            "tokens": (out := model(pixel_values=x)).last_hidden_state,
            "pooled": out.pooler_output,
        },
        label="hf BeitModel",
    )


def test_hf_in_memory_layout_of_transformers_5_loads() -> None:
    """transformers >= 5 names the tensors differently in memory than in its files (q_proj,
    layers.N ...); a state dict taken from a live model loads too."""
    torch.manual_seed(0)
    hf_model = transformers.BeitForImageClassification(transformers.BeitConfig(**SMALL)).eval()
    perturb_every_tensor(hf_model)
    from vitzoo_plugins.beit_weights import spec_from_hf_beit

    config = json.loads(hf_model.config.to_json_string())
    model = vitzoo.build(spec_from_hf_beit(config)).eval()
    load_state_dict(model, hf_model.state_dict(), source="hf")
    x = torch.randn(2, 3, 32, 32)
    assert_same_function(
        model, hf_model, x, forward_theirs=lambda m, x: m(pixel_values=x).logits, label="hf v5"
    )


def test_hf_shared_table_checkpoints_are_refused_plainly(tmp_path) -> None:
    saved(
        "BeitModel",
        tmp_path,
        use_relative_position_bias=False,
        use_shared_relative_position_bias=True,
    )
    with pytest.raises(WeightsError, match="use_shared_relative_position_bias"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("preset", "config"),
    [
        ("beit-b16", {}),
        ("beit-b16-384", dict(image_size=384)),
        ("beit-l16", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)),
        (
            "beit-l16-512",
            dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=512),
        ),
    ],
)
def test_full_size_hf_layouts_fill_the_presets_exactly(preset: str, config: dict) -> None:
    """microsoft/beit-{base,large}-patch16-{224,384,512}'s configs (relative bias per block,
    mean pooling) built on the meta device: every tensor maps onto the preset, shapes equal."""
    hf_config = transformers.BeitConfig(
        use_relative_position_bias=True,
        use_mean_pooling=True,
        num_labels=1000,
        intermediate_size=4 * config.get("hidden_size", 768),
        **config,
    )
    from vitzoo.weights.converter import raise_for_problems, target_shapes

    with torch.device("meta"):
        hf_model = transformers.BeitForImageClassification(hf_config)
        ours = vitzoo.build(preset)
    shapes = target_shapes(ours)
    (converter,) = converters_for("beit", "hf")
    conversion = converter.convert(hf_model.state_dict(), shapes)
    raise_for_problems(conversion, shapes, f"HF -> {preset}")
