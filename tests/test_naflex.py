"""SigLIP 2 NaFlex: vitzoo's ``siglip2-naflex`` computes timm's ``NaFlexVit`` and Hugging Face's
``Siglip2VisionModel`` on batches of images of different sizes.

timm: a fixture made by timm's own constructor in NaFlex mode (tools/reference_fixtures/naflex.py):
float32 and float64 (timm resizes the table in float32 with the same torch kernel vitzoo uses, so
the float64 run is reproducible). Hugging Face: the tiny model built here, every tensor perturbed,
fed its own pre-patchified pixels, padding mask and spatial shapes; its position table is resized
by explicit float32 weights (not torch's kernel), so resized grids compare in float32 and a batch
on the table's own grid compares in float64 too. Full size: every tensor of the released towers
maps onto the presets (timm via the layouts file, HF built here on the meta device).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import transformers
from fidelity import assert_matches_fixture, assert_matches_reference, tolerance
from reference_data import load_reference
from weights_helpers import perturb_every_tensor

import vitzoo
from vitzoo.components.flat_patch import patchify
from vitzoo.weights import load_state_dict
from vitzoo.weights.converter import target_shapes

FIXTURE = "timm-naflex-siglip"


def naflex_spec(dim: int, depth: int, heads: int, patch: int, table: int, mlp: int) -> dict:
    return {
        "model": {
            "type": "siglip2-naflex",
            "image_size": table * patch,
            "dim": dim,
            "depth": depth,
            "num_heads": heads,
            "patch": {"type": "flat-linear", "patch_size": patch, "order": "hwc"},
            "mlp": {"type": "mlp", "hidden_dim": mlp, "activation": "gelu-tanh"},
        }
    }


def on_crops(sizes):
    def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model([x[i, :, :h, :w] for i, (h, w) in enumerate(sizes)])

    return forward


def timm_converted() -> tuple[torch.nn.Module, object]:
    fixture = load_reference(FIXTURE)
    cfg = fixture.meta["timm"]
    spec = naflex_spec(
        cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["patch_size"], 4, 4 * cfg["embed_dim"]
    )
    model = vitzoo.build(spec).eval()
    load_state_dict(model, fixture.state_dict, source="timm")
    return model, fixture


def test_naflex_computes_timm_naflexvit_on_images_of_four_sizes() -> None:
    model, fixture = timm_converted()
    diffs = assert_matches_fixture(model, fixture, on_crops(fixture.meta["sizes"]))
    assert set(diffs) == {"output float32", "output float64"}


def test_the_timm_fixture_sees_the_position_resize() -> None:
    """The per-image table resize is part of the function: bicubic instead of bilinear, or no
    antialiasing, moves the output far beyond the tolerance (the fixture's grids 2 x 6, 7 x 3,
    1 x 2 are all resized from 4 x 4)."""
    model, fixture = timm_converted()
    forward = on_crops(fixture.meta["sizes"])
    limit = tolerance(fixture.output)
    original = model.posenc.resampling
    with torch.no_grad():
        for change in ({"interpolation": "bicubic"}, {"antialias": False}):
            model.posenc.resampling = replace(original, **change)
            moved = (forward(model, fixture.input) - fixture.output).abs().max().item()
            assert moved > 100 * limit, change
    model.posenc.resampling = original


# -- Hugging Face --------------------------------------------------------------------------------
HF_TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_patches=16,
    patch_size=4,
)


def hf_pair(dtype=torch.float32):
    """A perturbed tiny Siglip2VisionModel and vitzoo's conversion of it (spec from its config)."""
    from vitzoo.weights.selection import converters_for

    config = transformers.Siglip2VisionConfig(**HF_TINY)
    torch.manual_seed(0)
    hf = transformers.Siglip2VisionModel(config).eval()
    perturb_every_tensor(hf, seed=5)
    (converter,) = [c for c in converters_for("siglip2-naflex", "hf")]
    spec = converter.spec_from_config({**config.to_dict(), "architectures": ["Siglip2VisionModel"]})
    ours = vitzoo.build(spec).eval()
    load_state_dict(ours, hf.state_dict(), source="hf")
    return hf.to(dtype), ours.to(dtype)


def hf_batch(images: list[torch.Tensor], patch: int = 4) -> dict[str, torch.Tensor]:
    """What Siglip2ImageProcessor hands the model: (p, p, C) patches padded to one length, the
    padding mask and each image's (rows, columns)."""
    patches = [patchify(image[None], (patch, patch), "hwc")[0] for image in images]
    longest = max(p.shape[0] for p in patches)
    padded = torch.stack([torch.nn.functional.pad(p, (0, 0, 0, longest - len(p))) for p in patches])
    mask = torch.stack([(torch.arange(longest) < len(p)).long() for p in patches])
    shapes = torch.tensor([[i.shape[1] // patch, i.shape[2] // patch] for i in images])
    return {"pixel_values": padded, "pixel_attention_mask": mask, "spatial_shapes": shapes}


@pytest.mark.parametrize(
    ("sizes", "dtype"),
    [
        ([(16, 16), (8, 24), (28, 12), (4, 8)], torch.float32),
        ([(16, 16), (16, 16)], torch.float64),
    ],
    ids=["mixed-float32", "table-grid-float64"],
)
def test_naflex_computes_hf_siglip2_vision_model(sizes, dtype) -> None:
    hf, ours = hf_pair(dtype)
    gen = torch.Generator().manual_seed(7)
    images = [torch.randn(3, h, w, generator=gen, dtype=dtype) for h, w in sizes]
    with torch.no_grad():
        expected = hf(**hf_batch(images)).pooler_output
        actual = ours(images)
    diff = assert_matches_reference(actual, expected, dtype=dtype, label="pooler_output")
    print(f"hf-siglip2 {dtype}: max abs diff {diff:.3g}")


def test_hf_siglip2_spec_from_config_is_the_preset() -> None:
    """transformers' default Siglip2VisionConfig is the released B/16 NaFlex tower: the spec the
    converter derives from it builds the preset's model, and its full-size tensors fill the
    preset exactly on the meta device (So400m likewise)."""
    from vitzoo.weights.selection import converters_for

    (converter,) = converters_for("siglip2-naflex", "hf")
    for preset, overrides in (
        ("siglip2-b16-naflex", {}),
        (
            "siglip2-so400m16-naflex",
            dict(
                hidden_size=1152,
                intermediate_size=4304,
                num_hidden_layers=27,
                num_attention_heads=16,
            ),
        ),
    ):
        config = transformers.Siglip2VisionConfig(**overrides)
        with torch.device("meta"):
            hf = transformers.Siglip2VisionModel(config)
            ours = vitzoo.build(preset)
            derived = vitzoo.build(converter.spec_from_config(config.to_dict()))
        shapes = target_shapes(ours)
        assert target_shapes(derived) == shapes
        assert converter.convert(hf.state_dict(), shapes).problems(shapes) == []


def test_packed_naflex_gives_each_image_its_own_embedding() -> None:
    """The MAP head pools each image from its own tokens (its key-padding mask) and each image's
    positions are resized for its own grid: a packed batch gives, per image, the image alone."""
    _, ours = hf_pair(torch.float64)
    gen = torch.Generator().manual_seed(3)
    images = [
        torch.randn(3, h, w, generator=gen, dtype=torch.float64)
        for h, w in [(16, 16), (8, 24), (28, 12), (4, 8), (12, 12)]
    ]
    with torch.no_grad():
        packed = ours(images)
        alone = torch.cat([ours(image[None]) for image in images])
    assert (packed - alone).abs().max().item() < 1e-10
