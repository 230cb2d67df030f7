"""Hugging Face checkpoints load into vitzoo and compute the same function.

Each test builds a random-init transformers model from a tiny config, perturbs every tensor,
``save_pretrained``s it and loads the folder through vitzoo with the spec derived from its
config.json. Both sides run here, so they are compared in float32 and in float64, by
``fidelity``'s rule (float64 within 1e-9, float32 within 1e-5 x the logits' scale). Nothing is
downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fidelity import assert_same_function

import vitzoo
from tests.weights_helpers import max_abs_diff, perturb_every_tensor

transformers = pytest.importorskip("transformers")


def save_hf(model: torch.nn.Module, folder: Path, preprocessor: dict | None = None) -> Path:
    perturb_every_tensor(model)
    model.eval().save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def hf_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=x).logits


def assert_loads_same_function(
    hf_model: torch.nn.Module, folder: Path, size: int, label: str
) -> None:
    from vitzoo.weights import load_pretrained

    loaded = load_pretrained(folder)
    torch.manual_seed(0)
    x, other = torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)
    with torch.no_grad():
        spread = max_abs_diff(hf_logits(hf_model, other), hf_logits(hf_model, x))
    print(f"{label}: logits move {spread:.3g} between inputs")
    assert spread > 1e-4, "the comparison is vacuous: logits do not depend on the input"
    assert_same_function(loaded.model.eval(), hf_model, x, forward_theirs=hf_logits, label=label)
    assert loaded.conversion.unmatched_source == [] and loaded.conversion.missing_target == []


def test_hf_vit(tmp_path):
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    model = transformers.ViTForImageClassification(config)
    folder = save_hf(model, tmp_path / "vit")
    assert_loads_same_function(model, folder, 32, "hf ViT")
    spec = vitzoo.build(weights=folder).vitzoo_spec
    assert spec.model.norm_eps == 1e-12 and spec.model.block.norm_eps == 1e-12


def test_hf_deit_with_teacher(tmp_path):
    config = transformers.DeiTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    model = transformers.DeiTForImageClassificationWithTeacher(config)
    assert_loads_same_function(model, save_hf(model, tmp_path / "deit"), 32, "hf DeiT (teacher)")


def test_hf_cvt(tmp_path):
    config = transformers.CvtConfig(
        embed_dim=[16, 32],
        depth=[1, 2],
        num_heads=[1, 2],
        patch_sizes=[7, 3],
        patch_stride=[4, 2],
        patch_padding=[2, 1],
        mlp_ratio=[4.0, 4.0],
        attention_drop_rate=[0.0, 0.0],
        drop_rate=[0.0, 0.0],
        drop_path_rate=[0.0, 0.0],
        qkv_bias=[True, True],
        cls_token=[False, True],
        qkv_projection_method=["dw_bn", "dw_bn"],
        kernel_qkv=[3, 3],
        padding_kv=[1, 1],
        stride_kv=[2, 2],
        padding_q=[1, 1],
        stride_q=[1, 1],
        num_labels=3,
    )
    model = transformers.CvtForImageClassification(config)
    # CvT's config.json has no image size: the processor's (32 px here) sets the spec's.
    processor = {
        "size": {"shortest_edge": 32},
        "crop_pct": 0.875,
        "resample": 3,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
    }
    folder = save_hf(model, tmp_path / "cvt", processor)
    assert_loads_same_function(model, folder, 32, "hf CvT")


def test_hf_mobilevit(tmp_path):
    config = transformers.MobileViTConfig(
        image_size=64,
        neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
        hidden_sizes=[16, 16, 24],
        num_attention_heads=2,
        expand_ratio=2.0,
        num_labels=3,
    )
    model = transformers.MobileViTForImageClassification(config)
    assert_loads_same_function(model, save_hf(model, tmp_path / "mobilevit"), 64, "hf MobileViT")


def test_preprocessing_and_labels_travel_with_the_weights(tmp_path):
    from vitzoo.weights import convert_checkpoint

    config = transformers.ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=16,
        patch_size=8,
        id2label={0: "female", 1: "male"},
    )
    processor = {
        "do_resize": True,
        "size": {"height": 16, "width": 16},
        "resample": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    folder = save_hf(transformers.ViTForImageClassification(config), tmp_path / "hf", processor)
    out = tmp_path / "converted.safetensors"
    convert_checkpoint(folder, out)
    model = vitzoo.load(out)
    from vitzoo.checkpoint import read_checkpoint
    from vitzoo.weights.preprocessing import Preprocessing

    pre = Preprocessing.from_metadata(read_checkpoint(out)[1])
    assert pre.mean == (0.5, 0.5, 0.5) and pre.interpolation == "bilinear"
    assert pre.crop_fraction == 1.0 and pre.input_size == (3, 16, 16)
    assert pre.class_names == ("female", "male")
    assert model.vitzoo_spec.model.norm_eps == 1e-12


@pytest.mark.parametrize(
    "config_cls, model_cls, preset",
    [
        ("ViTConfig", "ViTForImageClassification", "vit-b16"),
        ("DeiTConfig", "DeiTForImageClassificationWithTeacher", "deit-b-distilled"),
        ("CvtConfig", "CvtForImageClassification", "cvt-13"),
        ("MobileViTConfig", "MobileViTForImageClassification", "mobilevit-s"),
    ],
)
def test_full_size_hf_layouts_fill_the_presets_exactly(config_cls, model_cls, preset):
    """transformers' default configs are the released base models (ViT-B/16, DeiT-B distilled,
    CvT-13, MobileViT-S): built on the meta device, every tensor maps onto the vitzoo preset
    with equal shapes (the README table's preset <-> Hugging Face rows)."""
    from vitzoo.weights.selection import converters_for

    config = getattr(transformers, config_cls)(num_labels=1000)
    with torch.device("meta"):
        hf_model = getattr(transformers, model_cls)(config)
        ours = vitzoo.build(preset)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    (converter,) = [
        c
        for c in converters_for(ours.vitzoo_spec.model.type, "hf")
        if config.model_type in c.config_names
    ]
    conversion = converter.convert(hf_model.state_dict(), shapes)
    assert conversion.problems(shapes) == []


def test_hf_deit_without_teacher_and_bare_vit_model(tmp_path):
    """DeiTForImageClassification reads the class token only (the distillation token stays in
    the sequence); a bare ViTModel is a feature extractor (its tanh pooler is unused by design)
    that fine-tuning gives a fresh head."""
    small = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    deit = transformers.DeiTForImageClassification(transformers.DeiTConfig(**small))
    assert_loads_same_function(deit, save_hf(deit, tmp_path / "deit"), 32, "hf DeiT (no teacher)")

    bare = transformers.ViTModel(transformers.ViTConfig(**small))
    folder = save_hf(bare, tmp_path / "bare")
    from vitzoo.weights import load_pretrained

    loaded = load_pretrained(folder)
    assert set(loaded.conversion.unused) == {"pooler.dense.weight", "pooler.dense.bias"}
    x = torch.randn(2, 3, 32, 32)
    assert_same_function(
        loaded.model.eval(),
        bare,
        x,
        forward_ours=lambda model, x: model.forward_features(x),
        forward_theirs=lambda model, x: model(pixel_values=x).last_hidden_state,
        label="hf ViTModel features",
    )
    assert loaded.model.num_classes == 0
    assert vitzoo.build(weights=folder, num_classes=2)(x).shape == (2, 2)
