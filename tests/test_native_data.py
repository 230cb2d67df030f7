"""Native-resolution data (``data.max_patches``): each image keeps its aspect ratio under a patch
budget, batches are lists of images the model packs; ``vitzoo train`` / ``evaluate`` /
``predict`` run on them end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_helpers import pattern

import vitzoo
from vitzoo.commands.inspect import attention as attention_cmd
from vitzoo.commands.predict import predict as predict_cmd
from vitzoo.commands.train import evaluate as evaluate_cmd
from vitzoo.components.packing import ImageList
from vitzoo.data import create_transform, resolve_data_config
from vitzoo.data.folders import EpochBatches, FolderDataset, SampleIndex, loader
from vitzoo.data.native import native_size
from vitzoo.spec import SpecError
from vitzoo.training.trainer import train

#: A NaViT small enough to train in a few seconds: 32 px tables, patch 8, one block.
NATIVE_SPEC = {
    "model": {
        "type": "navit",
        "image_size": 32,
        "num_classes": 2,
        "dim": 32,
        "depth": 1,
        "num_heads": 2,
        "patch": {
            "type": "flat-linear",
            "patch_size": 8,
            "order": "chw",
            "pre_norm": "layernorm-nobias",
            "norm": "layernorm-nobias",
        },
    },
    "train": {"epochs": 2, "batch_size": 6, "lr": 0.003, "warmup_epochs": 0.5, "log_every": 1},
    "data": {"max_patches": 8, "scale": [0.5, 1.0]},
}
#: (width, height) of the folder's images: tall, wide, square, very wide.
SIZES = [(20, 40), (48, 24), (30, 30), (64, 12)]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train`` 6 images per class, ``val`` 3, in four aspect ratios."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 3)):
        for label, name in enumerate(("top", "bottom")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                array = pattern(label, SIZES[i % len(SIZES)], rng)
                Image.fromarray(array, mode="RGB").save(folder / f"{i}.png")
    return root


# -- sizing --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("height", "width"), [(480, 640), (640, 480), (100, 1000), (50, 50), (333, 777)]
)
def test_native_size_keeps_the_aspect_ratio_under_the_budget(height: int, width: int) -> None:
    h, w = native_size(height, width, (16, 16), 256)
    assert h % 16 == 0 and w % 16 == 0
    assert (h // 16) * (w // 16) <= 256
    # aspect ratio kept to within one patch per side
    assert abs(h / w - height / width) <= 16 / min(h, w) + 1e-9
    # the budget is filled as far as one more patch row or column would overflow it
    assert (h // 16 + 1) * (w // 16 + 1) > 256


def test_native_size_respects_the_largest_grid_and_enlarges_small_images() -> None:
    assert native_size(10, 1000, (16, 16), 256, max_grid=(32, 32)) == (16, 512)
    assert native_size(8, 8, (16, 16), 64) == (128, 128)  # enlarged to the budget
    assert native_size(40, 90, (16, 16), 64, upscale=False) == (48, 96)  # its own size, rounded up
    assert native_size(400, 900, (16, 16), 64, upscale=False) == native_size(400, 900, (16, 16), 64)


def test_transform_sizes_each_image_and_the_loader_yields_image_lists(data: Path) -> None:
    model = vitzoo.build(NATIVE_SPEC)
    config = resolve_data_config(model)
    assert config.native is not None and config.native.max_patches == 8
    transform = create_transform(config)
    shapes = {tuple(transform(Image.new("RGB", s)).shape) for s in SIZES}
    assert len(shapes) == len(SIZES)  # four aspect ratios, four sizes
    for _, h, w in shapes:
        assert (h // 8) * (w // 8) <= 8 and h % 8 == 0 and w % 8 == 0
    dataset = FolderDataset(SampleIndex.scan(data / "val"), transform, seed=0)
    batches = EpochBatches(len(dataset), 4, epoch=0, seed=0, train=False)
    images, labels = next(iter(loader(dataset, batches, 0)))
    assert isinstance(images, ImageList) and len(images) == 4 and labels.shape == (4,)
    with torch.no_grad():
        assert model.eval()(images).shape == (4, 2)


def test_specs_that_cannot_feed_native_batches_are_refused() -> None:
    plain = {
        "model": {
            "type": "vit",
            **{k: NATIVE_SPEC["model"][k] for k in ("dim", "depth", "num_heads")},
        }
    }
    with pytest.raises(SpecError, match="needs a model with a packed path"):
        vitzoo.build({**plain, "data": {"max_patches": 8}})
    with pytest.raises(SpecError, match=r"objective\.cutmix_alpha.*blends images of one size"):
        vitzoo.build({**NATIVE_SPEC, "objective": {"type": "supervised", "cutmix_alpha": 1.0}})


# -- train / evaluate / predict --------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory):
    return train(NATIVE_SPEC, data, out=tmp_path_factory.mktemp("run") / "run")


def test_train_runs_on_native_batches(trained) -> None:
    assert [row["epoch"] for row in trained.history] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) for row in trained.history)
    assert "val_accuracy" in trained.history[-1]
    assert (trained.run_dir / "best.safetensors").is_file()


def test_resume_and_accumulation_on_native_batches(data: Path, tmp_path: Path) -> None:
    """Lists of images resume bit-for-bit, and split into micro-batches like a tensor batch."""
    spec = {**NATIVE_SPEC, "train": {**NATIVE_SPEC["train"], "accumulation_steps": 2}}
    full = train(spec, data, epochs=2, out=tmp_path / "full")
    train(spec, data, epochs=1, out=tmp_path / "part")
    resumed = train(spec, data, epochs=2, out=tmp_path / "part", resume=True)
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_evaluate_and_predict_keep_each_image_size(trained, data: Path) -> None:
    ckpt = str(trained.run_dir / "last.safetensors")
    result = CliRunner().invoke(evaluate_cmd, [ckpt, "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["samples"] == 6
    images = sorted((data / "val" / "top").iterdir())
    result = CliRunner().invoke(
        predict_cmd, [ckpt, *map(str, images), "--json", "-k", "2", "--flip"]
    )
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.output)
    assert len(predictions) == 3
    for p in predictions:
        assert sum(t["probability"] for t in p["top"]) == pytest.approx(1.0, abs=1e-5)


def test_attention_overlay_follows_the_image_grid(trained, data: Path, tmp_path: Path) -> None:
    """``vitzoo attention`` on a native-resolution checkpoint maps the image's own patch grid."""
    wide = sorted((data / "val" / "top").iterdir())[1]  # 48 x 24 px: a 2:1 image
    out = tmp_path / "overlay.png"
    ckpt = str(trained.run_dir / "last.safetensors")
    result = CliRunner().invoke(attention_cmd, [ckpt, str(wide), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "grid (2, 4)" in result.output and out.is_file()


def test_the_native_resolution_example_builds_and_takes_images_of_any_size() -> None:
    root = Path(__file__).resolve().parents[1]
    model = vitzoo.build(str(root / "examples" / "native-resolution.yaml")).eval()
    assert resolve_data_config(model).native.max_patches == 256
    with torch.no_grad():
        logits = model([torch.randn(3, 64, 160), torch.randn(3, 384, 32)])
    assert logits.shape == (2, 2)
