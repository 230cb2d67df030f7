"""``vitzoo.data``: one answer to "what input does this model want", and the transform from it.

:func:`resolve_data_config` reads, per setting, overrides > the spec's non-default ``data:``
values > the model's ``vitzoo_preprocessing`` > a checkpoint's metadata > vitzoo's defaults;
each test pins one step of that ladder. :func:`create_transform` is checked on constant-colour
images, whose normalised values are known exactly.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitzoo
from vitzoo.builder import resolve_spec
from vitzoo.data import create_transform, resolve_data_config
from vitzoo.data.folders import generator
from vitzoo.spec.sections import IMAGENET_MEAN, IMAGENET_STD
from vitzoo.weights.preprocessing import Preprocessing

TINY = {
    "type": "vit",
    "image_size": [16, 24],
    "num_classes": 2,
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "patch": {"type": "linear", "patch_size": 8},
}
HALF = (0.5, 0.5, 0.5)
PRE = Preprocessing(
    mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), crop_fraction=0.875, class_names=("a", "b")
)


def tiny_model(**data) -> torch.nn.Module:
    return vitzoo.build({"model": TINY, **({"data": data} if data else {})})


def test_defaults_are_imagenet_the_whole_image_and_bicubic() -> None:
    config = resolve_data_config()
    assert config.to_dict() == {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "crop_pct": 1.0,
    }
    assert config.class_names is None and set(config.sources.values()) == {"default"}


def test_a_spec_gives_its_data_section_and_its_input_size() -> None:
    spec = resolve_spec({"model": {**TINY, "in_chans": 1}, "data": {"mean": [0.5], "std": [0.2]}})
    config = resolve_data_config(spec)
    assert config.input_size == (1, 16, 24) and (config.mean, config.std) == ((0.5,), (0.2,))
    assert config.sources["mean"] == "spec" and config.sources["input_size"] == "spec"
    assert resolve_data_config("vit-ti16").input_size == (3, 224, 224)  # a preset name


def test_the_models_preprocessing_fills_what_the_spec_leaves_at_the_defaults() -> None:
    model = tiny_model()
    model.vitzoo_preprocessing = PRE
    config = resolve_data_config(model)
    assert (config.mean, config.std, config.crop_pct) == (PRE.mean, PRE.std, 0.875)
    assert config.class_names == ("a", "b") and config.input_size == (3, 16, 24)
    assert {config.sources[k] for k in ("mean", "std", "crop_pct")} == {"model"}
    assert config.data.eval_crop == 0.875  # what the transform reads


def test_a_spec_that_sets_the_statistics_wins_over_the_weights() -> None:
    """A fine-tuned model was trained with its spec's values; the pretrained source's
    statistics it still carries must not override them."""
    model = tiny_model(mean=list(HALF), std=list(HALF))
    model.vitzoo_preprocessing = PRE
    config = resolve_data_config(model)
    assert (config.mean, config.std) == (HALF, HALF) and config.sources["mean"] == "spec"
    assert config.crop_pct == 0.875  # the spec left eval_crop at its default


def test_a_checkpoints_metadata_is_read_with_or_without_the_model(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    vitzoo.save(tiny_model(), path, metadata=PRE.to_metadata())
    alone = resolve_data_config(path)
    assert (alone.mean, alone.std, alone.crop_pct) == (PRE.mean, PRE.std, 0.875)
    assert alone.input_size == (3, 16, 24) and alone.class_names == ("a", "b")
    assert alone.sources["mean"] == "checkpoint" and alone.sources["input_size"] == "spec"
    loaded = resolve_data_config(vitzoo.load(path), checkpoint=path)
    assert loaded.to_dict() == alone.to_dict() and loaded.sources["input_size"] == "model"


def test_the_models_preprocessing_wins_over_the_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    vitzoo.save(tiny_model(), path, metadata=PRE.to_metadata())
    model = vitzoo.load(path)
    model.vitzoo_preprocessing = Preprocessing(mean=HALF, std=HALF)
    config = resolve_data_config(model, checkpoint=path)
    assert (config.mean, config.std) == (HALF, HALF) and config.sources["mean"] == "model"
    assert config.crop_pct == 0.875 and config.sources["crop_pct"] == "checkpoint"


def test_overrides_win_over_everything() -> None:
    model = tiny_model(mean=[0.3] * 3, std=[0.3] * 3)
    model.vitzoo_preprocessing = PRE
    config = resolve_data_config(
        model, mean=HALF, std=HALF, crop_pct=0.5, input_size=32, interpolation="bilinear"
    )
    assert config.to_dict() == {
        "input_size": (3, 32, 32),
        "interpolation": "bilinear",
        "mean": HALF,
        "std": HALF,
        "crop_pct": 0.5,
    }
    assert {config.sources[k] for k in config.to_dict()} == {"override"}
    assert resolve_data_config(class_names=["x"]).class_names == ("x",)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"crop_pct": 1.5}, "crop_pct: must be in (0, 1]"),
        ({"mean": (0.5, 0.5)}, "mean and std need the same length"),
        ({"input_size": (3, 0, 8)}, "input_size=(3, 0, 8)"),
        ({"interpolation": "cubic"}, "allowed: ['nearest'"),
        ({"size": 3}, "unknown setting(s) ['size']"),
    ],
)
def test_a_bad_override_is_named_plainly(overrides: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        resolve_data_config(**overrides)
    assert message in str(info.value) and "pydantic" not in str(info.value)


def test_eval_transform_of_a_constant_image_is_exactly_normalised() -> None:
    """(255, 0, 51) / 255 = (1, 0, 0.2); with mean = std = 0.5 that is (1, -1, -0.6) at every
    pixel, whatever the crop and the resampling (a constant stays constant)."""
    config = resolve_data_config(tiny_model(), mean=HALF, std=HALF, crop_pct=0.875)
    transform = create_transform(config)
    x = transform(Image.new("RGB", (50, 30), (255, 0, 51)))
    assert x.shape == (3, 16, 24) and x.dtype == torch.float32
    expected = torch.tensor([1.0, -1.0, -0.6]).view(3, 1, 1).expand(3, 16, 24)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    assert x[0].eq(1.0).all() and x[1].eq(-1.0).all()  # exact where the arithmetic is


def test_eval_transform_converts_any_mode_to_the_models_channels() -> None:
    """Transparent pixels are composited on white (as the training data reader does); a
    one-channel model gets greyscale, normalised by the mean of three statistics."""
    config = resolve_data_config(input_size=(1, 8, 8), mean=HALF, std=HALF)
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    torch.testing.assert_close(create_transform(config)(clear), torch.ones(1, 8, 8))
    imagenet = resolve_data_config(input_size=(1, 8, 8))
    x = create_transform(imagenet)(Image.new("L", (8, 8), 0))
    expected = -(sum(IMAGENET_MEAN) / 3) / (sum(IMAGENET_STD) / 3)
    torch.testing.assert_close(x, torch.full((1, 8, 8), expected), atol=1e-6, rtol=0)


def test_a_clip_becomes_channels_frames_height_width() -> None:
    config = resolve_data_config(input_size=(3, 4, 8, 8), mean=HALF, std=HALF)
    assert config.frames == 4 and config.size == (8, 8)
    frames = [Image.new("RGB", (12, 12), (255, 255, 255))] * 4
    x = create_transform(config)(frames)
    assert x.shape == (3, 4, 8, 8) and x.eq(1.0).all()


def test_the_training_transform_augments_from_the_seeded_generator() -> None:
    config = resolve_data_config(tiny_model(hflip=1.0, color_jitter=0.4))
    transform = create_transform(config, train=True)
    image = Image.effect_noise((40, 40), 64).convert("RGB")
    first, again = transform(image, generator(7)), transform(image, generator(7))
    assert first.shape == (3, 16, 24) and torch.equal(first, again)
    assert not torch.equal(first, transform(image, generator(8)))
    with pytest.raises(ValueError, match="seeded generator"):
        transform(image)


def test_the_data_package_imports_nothing_above_its_layer() -> None:
    """``vitzoo.data`` sits beside the public API, below training/testing/commands/cli --
    not even a function-level import of them."""
    banned = ("vitzoo.training", "vitzoo.testing", "vitzoo.commands", "vitzoo.cli")
    for path in (Path(vitzoo.__file__).parent / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(banned), f"{path.name} imports {name}"


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, vitzoo.data; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
