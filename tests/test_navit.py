"""NaViT: vitzoo's navit computes vit-pytorch's NaViT on a packed batch of four image sizes.

The fixture (tools/reference_fixtures/navit.py) is vit-pytorch's own ``NaViT``, every tensor
perturbed, run on images of four sizes packed into one sequence; vitzoo loads its state dict
through the ``vit-pytorch-navit`` converter and runs the same list of images through its packed
path (vitzoo packs them into rows of its own choosing: the per-image outputs must not care).
Full-size: every tensor of vit-pytorch's NaViT at each preset's size maps onto the preset.
"""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from fidelity import assert_matches_fixture, tolerance
from reference_data import FIXTURE_DIR, load_reference

import vitzoo
from vitzoo.weights import load_state_dict
from vitzoo.weights.converter import target_shapes

FIXTURE = "vit-pytorch-navit"


def navit_spec(meta: dict) -> dict:
    """The vitzoo spec of the fixture's ``NaViT(...)`` call."""
    cfg = meta["navit"]
    return {
        "model": {
            "type": "navit",
            "image_size": cfg["image_size"],
            "num_classes": cfg["num_classes"],
            "dim": cfg["dim"],
            "depth": cfg["depth"],
            "num_heads": cfg["heads"],
            "attention": {
                "type": "mhsa",
                "head_dim": cfg["dim_head"],
                "qkv_bias": False,
                "proj_bias": False,
                "qk_norm": True,
                "qk_norm_type": "rmsnorm",
                "qk_norm_per_head": True,
                "qk_norm_eps": 1e-12,
            },
            "mlp": {"type": "mlp", "hidden_dim": cfg["mlp_dim"]},
            "patch": {
                "type": "flat-linear",
                "patch_size": cfg["patch_size"],
                "order": "chw",
                "pre_norm": "layernorm-nobias",
                "norm": "layernorm-nobias",
            },
        }
    }


def on_crops(sizes):
    """The fixture's forward: image i is the top-left ``sizes[i]`` crop of input i."""

    def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model([x[i, :, :h, :w] for i, (h, w) in enumerate(sizes)])

    return forward


def converted() -> tuple[torch.nn.Module, object]:
    fixture = load_reference(FIXTURE)
    model = vitzoo.build(navit_spec(fixture.meta)).eval()
    load_state_dict(model, fixture.state_dict, source="official")
    return model, fixture


def test_navit_computes_vit_pytorch_navit_on_a_packed_batch() -> None:
    model, fixture = converted()
    diffs = assert_matches_fixture(model, fixture, on_crops(fixture.meta["sizes"]))
    assert set(diffs) == {"output float32", "output float64"}


def test_the_fixture_sees_a_wrong_attention() -> None:
    """The perturbation is large enough: leaving out the qk-norm scale fold (vit-pytorch's logit
    scale 1 against mhsa's 1/sqrt(d)), or swapping queries and keys, moves the output far beyond
    the tolerance."""
    model, fixture = converted()
    forward = on_crops(fixture.meta["sizes"])
    limit = tolerance(fixture.output)
    attention = model.blocks[1].attn
    with torch.no_grad():
        baseline = forward(model, fixture.input)
        for norm in (attention.q_norm, attention.k_norm):
            norm.weight /= norm.weight.shape[-1] ** 0.25
        unscaled = forward(model, fixture.input)
        for norm in (attention.q_norm, attention.k_norm):
            norm.weight *= norm.weight.shape[-1] ** 0.25
        q, k, v = attention.qkv.weight.chunk(3)
        attention.qkv.weight.copy_(torch.cat([k, q, v]))
        swapped = forward(model, fixture.input)
    assert (unscaled - baseline).abs().max().item() > 100 * limit
    assert (swapped - baseline).abs().max().item() > 100 * limit


def architecture_layouts() -> dict[str, dict[str, list[int]]]:
    """vit-pytorch NaViT's full-size layouts by preset (tools/make_architecture_layouts.py)."""
    path = FIXTURE_DIR / "architecture-layouts.json.gz"
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.mark.parametrize("preset", ["navit-b32", "navit-b16", "navit-l16"])
def test_full_size_vit_pytorch_navit_maps_onto_its_preset(preset: str) -> None:
    """On the meta device: every tensor of vit-pytorch's NaViT at the preset's size is claimed
    (the LayerNorms' zero ``beta`` buffers declared unused) and fills the preset exactly, names
    and shapes; the preset's parameter count is the reference's."""
    layout = architecture_layouts()[preset]
    converter = vitzoo.get_registry().get("converter", "vit-pytorch-navit")
    with torch.device("meta"):
        model = vitzoo.build(preset)
        tensors = {k: torch.empty(shape) for k, shape in layout.items()}
    shapes = target_shapes(model)
    assert converter.recognises(tensors, {})
    conversion = converter.convert(tensors, shapes)
    assert conversion.problems(shapes) == []
    reference_params = sum(
        torch.Size(shape).numel() for k, shape in layout.items() if not k.endswith("beta")
    )
    assert sum(p.numel() for p in model.parameters()) == reference_params
