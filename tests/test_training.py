"""Training, evaluation and prediction from a spec (``vitzoo.training`` + its CLI commands).

Every run is a 16x16, one-block ViT on a few synthetic images, so each trains in about a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_helpers import TINY_SPEC, make_dataset

import vitzoo
from vitzoo.builder import resolve_spec
from vitzoo.checkpoint import CheckpointError, read_checkpoint
from vitzoo.commands.predict import predict as predict_cmd
from vitzoo.commands.train import evaluate as evaluate_cmd
from vitzoo.commands.train import train as train_cmd
from vitzoo.components.posenc import resize_grid_embedding
from vitzoo.data.folders import EpochBatches, SampleIndex
from vitzoo.data.folders import generator as seeded
from vitzoo.data.images import DataError
from vitzoo.data.transforms import random_resized_crop_box
from vitzoo.plugins import get_registry
from vitzoo.spec import SpecError, TrainConfig, spec_to_dict, validate_spec
from vitzoo.training import optim
from vitzoo.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory):
    return train(TINY_SPEC, data, out=tmp_path_factory.mktemp("run") / "run")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


# -- spec sections ---------------------------------------------------------------------------
def test_train_and_data_sections_default_validate_and_round_trip() -> None:
    spec = resolve_spec({"model": TINY_SPEC["model"]})
    assert spec.train == TrainConfig()
    full = resolve_spec(TINY_SPEC)
    assert validate_spec(get_registry(), spec_to_dict(full)) == full
    assert full.train.batch_size == 8


def test_bad_train_value_points_at_its_field() -> None:
    with pytest.raises(SpecError, match=r"train\.min_lr"):
        resolve_spec({**TINY_SPEC, "train": {"lr": 0.001, "min_lr": 0.01}})
    with pytest.raises(SpecError, match=r"data\.mean"):
        resolve_spec({**TINY_SPEC, "data": {"mean": [0.5, 0.5]}})


# -- optimiser and schedule --------------------------------------------------------------------
def test_weight_decay_skips_norms_biases_positions_and_tokens() -> None:
    model = vitzoo.build(TINY_SPEC)
    groups = optim.param_groups(model.named_parameters(), set(model.no_weight_decay()), 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    kept = {names[id(p)] for p in groups[1]["params"]}
    assert groups[1]["weight_decay"] == 0.0
    assert any("pos_embed" in n for n in kept) and "cls_token" in kept
    assert all(not n.endswith(".bias") and "norm" not in n for n in decayed)
    assert any(n.endswith("qkv.weight") for n in decayed)


def test_warmup_then_cosine() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1)
    assert optim.lr_at(0, 100, 10, cfg) == pytest.approx(0.1)
    assert optim.lr_at(9, 100, 10, cfg) == pytest.approx(1.0)
    assert optim.lr_at(10, 100, 10, cfg) == pytest.approx(1.0)
    assert optim.lr_at(100, 100, 10, cfg) == pytest.approx(0.1)
    assert optim.lr_at(55, 100, 10, cfg) == pytest.approx(0.55)


# -- data ---------------------------------------------------------------------------------------
def test_crop_boxes_stay_inside_and_are_seeded() -> None:
    for seed in range(50):
        box = random_resized_crop_box(24, 20, (0.08, 1.0), (0.75, 4 / 3), seeded(seed))
        assert 0 <= box[0] < box[2] <= 24 and 0 <= box[1] < box[3] <= 20
        assert box == random_resized_crop_box(24, 20, (0.08, 1.0), (0.75, 4 / 3), seeded(seed))


def test_batches_shard_a_global_batch_across_processes() -> None:
    one = [b for b in EpochBatches(10, 4, epoch=3, seed=1, train=True)]
    two = [EpochBatches(10, 4, epoch=3, seed=1, train=True, rank=r, world=2) for r in (0, 1)]
    merged = [a + b for a, b in zip(*two, strict=True)]
    assert merged == one and len(one) == 2  # the partial batch is dropped
    shards = [
        list(EpochBatches(5, 2, epoch=0, seed=0, train=False, rank=r, world=2)) for r in (0, 1)
    ]
    seen = sorted(i for shard in shards for batch in shard for i, _ in batch)
    assert seen == list(range(5))


def test_unreadable_images_are_skipped_by_path_or_fail_when_strict(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, per_class=4, val_per_class=2)
    bad = root / "train" / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "train" / "dog" / "notes.txt").write_text("not an image, ignored by extension")
    folder = SampleIndex.scan(root / "train")
    assert [p for p, _ in folder.skipped] == [bad]
    assert len(folder) == 8
    with pytest.raises(DataError, match="broken.jpg"):
        SampleIndex.scan(root / "train", strict=True)
    result = train(TINY_SPEC, root, epochs=1, out=tmp_path / "run")
    assert result.history[0]["train_loss"] > 0
    runner = CliRunner()
    out = runner.invoke(
        train_cmd,
        [
            str(_spec_file(tmp_path)),
            "--data",
            str(root),
            "--out",
            str(tmp_path / "strict"),
            "--strict-data",
        ],
    )
    assert out.exit_code != 0 and "broken.jpg" in out.output


def _spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(TINY_SPEC))  # JSON is YAML
    return path


def test_missing_data_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such dataset folder"):
        train(TINY_SPEC, tmp_path / "nowhere", out=tmp_path / "run")


# -- a full run -----------------------------------------------------------------------------------
def test_run_writes_checkpoints_metrics_and_plot(trained) -> None:
    run = trained.run_dir
    for name in (
        "last.safetensors",
        "best.safetensors",
        "metrics.csv",
        "metrics.json",
        "spec.yaml",
    ):
        assert (run / name).is_file(), name
    assert len(list(run.glob("state-*.safetensors"))) == 1
    with Image.open(run / "curves.png") as img:
        assert img.format == "PNG" and img.size[0] > 100
    history = json.loads((run / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "lr", "images_per_second"} <= set(history[0])
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,lr,train_loss")
    _, meta = read_checkpoint(run / "last.safetensors")
    assert json.loads(meta["vitzoo.classes"]) == ["cat", "dog"]
    model = vitzoo.load(run / "last.safetensors")
    assert model.vitzoo_spec.train.batch_size == 8
    assert not any(run.glob(".*tmp"))


def test_refuses_to_overwrite_a_run_or_resume_another_model(trained, data: Path) -> None:
    with pytest.raises(FileExistsError, match="--resume"):
        train(TINY_SPEC, data, out=trained.run_dir)
    with pytest.raises(CheckpointError, match=r"differs from the run's in \['depth'\]"):
        train(TINY_SPEC, data, out=trained.run_dir, resume=True, overrides={"model.depth": 2})


def test_resume_equals_uninterrupted(data: Path, tmp_path: Path) -> None:
    spec = {**TINY_SPEC, "model": {**TINY_SPEC["model"], "drop_path_rate": 0.2, "depth": 2}}
    full = train(spec, data, epochs=3, out=tmp_path / "full")
    train(spec, data, epochs=1, out=tmp_path / "part")
    resumed = train(spec, data, epochs=3, out=tmp_path / "part", resume=True)
    a, b = weights(full.run_dir / "last.safetensors"), weights(resumed.run_dir / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_killed_save_keeps_previous_checkpoint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    train(TINY_SPEC, data, epochs=1, out=run)
    before = weights(run / "last.safetensors")
    import vitzoo.checkpoint as ckpt

    real_save = ckpt.save_file

    def dying_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt  # the process is killed mid-write

    monkeypatch.setattr(ckpt, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(TINY_SPEC, data, epochs=2, out=run, resume=True)
    after = weights(run / "last.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(ckpt, "save_file", real_save)
    resumed = train(TINY_SPEC, data, epochs=2, out=run, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


# -- evaluate / predict --------------------------------------------------------------------------
def test_evaluate_cli_reports_accuracy_per_class_and_confusion(trained, data: Path) -> None:
    result = CliRunner().invoke(
        evaluate_cmd, [str(trained.run_dir / "last.safetensors"), "--data", str(data), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samples"] == 8 and report["classes"] == ["cat", "dog"]
    confusion = torch.tensor(report["confusion"])
    assert confusion.shape == (2, 2) and confusion.sum() == 8
    assert report["accuracy"] == pytest.approx(float(confusion.trace()) / 8)
    assert report["per_class_accuracy"][0] == pytest.approx(float(confusion[0, 0]) / 4)
    table = CliRunner().invoke(
        evaluate_cmd, [str(trained.run_dir / "last.safetensors"), "--data", str(data)]
    )
    assert table.exit_code == 0 and "confusion matrix" in table.output


def test_predict_cli_gives_top_k_with_class_names(trained, data: Path, tmp_path: Path) -> None:
    images = sorted((data / "val" / "dog").iterdir())[:2]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    ckpt = str(trained.run_dir / "last.safetensors")
    result = CliRunner().invoke(predict_cmd, [ckpt, *map(str, images), "--json", "-k", "2"])
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    assert [p["image"] for p in predictions] == [str(i) for i in images]
    for p in predictions:
        assert {t["class"] for t in p["top"]} == {"cat", "dog"}
        assert sum(t["probability"] for t in p["top"]) == pytest.approx(1.0, abs=1e-5)
    failed = CliRunner().invoke(predict_cmd, [ckpt, str(images[0]), str(bad)])
    # partial results: exit 3, the unreadable file on stderr (README, "Exit status")
    assert failed.exit_code == 3 and "bad.png" in failed.stderr


# -- fine-tuning ----------------------------------------------------------------------------------
def test_finetune_to_new_classes_and_image_size(trained, tmp_path: Path) -> None:
    data3 = make_dataset(
        tmp_path / "data3", classes=("a", "b", "c"), per_class=4, odd_formats=False
    )
    source_path = trained.run_dir / "last.safetensors"
    spec = {
        **TINY_SPEC,
        "model": {**TINY_SPEC["model"], "image_size": 32},
        # a learning rate so small that the weights stay where the checkpoint put them
        "train": {"lr": 1e-9, "min_lr": 0.0, "warmup_epochs": 0, "init_from": str(source_path)},
    }
    result = train(spec, data3, epochs=1, out=tmp_path / "ft")
    model = vitzoo.load(result.run_dir / "last.safetensors")
    assert model.num_classes == 3 and model.input_size == (3, 32, 32)
    tuned, source = weights(result.run_dir / "last.safetensors"), weights(source_path)
    assert tuned["head.fc.weight"].shape == (3, 32) and source["head.fc.weight"].shape == (2, 32)
    for key in ("cls_token", "blocks.0.attn.qkv.weight", "patch.proj.weight"):
        torch.testing.assert_close(tuned[key], source[key], atol=1e-6, rtol=0)
    # the 2x2 position grid was resampled to 4x4 on load
    pos = "posenc.pos_embed"
    assert source[pos].shape[1] == 1 + 4 and tuned[pos].shape[1] == 1 + 16
    expected = resize_grid_embedding(source[pos][:, 1:], (2, 2), (4, 4))
    torch.testing.assert_close(tuned[pos][:, 1:], expected, atol=1e-6, rtol=0)


# -- the documented example ----------------------------------------------------------------------
def test_gender_classification_example_trains_on_a_synthetic_folder(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "faces", classes=("female", "male"), per_class=6)
    example = ROOT / "examples" / "gender-classification.yaml"
    pretrained = tmp_path / "pretrained.safetensors"
    vitzoo.save(
        vitzoo.build(
            example,
            **{
                "model.image_size": 32,
                "model.depth": 1,
                "model.dim": 32,
                "model.num_heads": 2,
                "model.patch.patch_size": 8,
                "model.num_classes": 5,
            },
        ),
        pretrained,
    )
    runner = CliRunner()
    sets = [
        "model.image_size=32",
        "model.depth=1",
        "model.dim=32",
        "model.num_heads=2",
        "model.patch.patch_size=8",
        f"train.init_from={pretrained}",
        "train.warmup_epochs=0",
    ]
    args = [
        str(example),
        "--data",
        str(data),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "run"),
    ]
    for item in sets:
        args += ["--set", item]
    result = runner.invoke(train_cmd, args)
    assert result.exit_code == 0, result.output
    ckpt = tmp_path / "run" / "best.safetensors"
    report = runner.invoke(evaluate_cmd, [str(ckpt), "--data", str(data), "--json"])
    assert json.loads(report.stdout)["classes"] == ["female", "male"]


# -- options and display --------------------------------------------------------------------------
def test_bf16_autocast_and_gradient_checkpointing_train(data: Path, tmp_path: Path) -> None:
    result = train(
        TINY_SPEC,
        data,
        epochs=1,
        out=tmp_path / "run",
        overrides={"train.precision": "bf16", "train.grad_checkpointing": True},
    )
    assert result.model.grad_checkpointing
    assert torch.isfinite(torch.tensor(result.final["train_loss"]))


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("VITZOO_SLOW_CHECKS") != "1",
    reason="torch.compile takes minutes on CPU; set VITZOO_SLOW_CHECKS=1",
)
def test_torch_compile_trains(data: Path, tmp_path: Path) -> None:
    result = train(
        TINY_SPEC, data, epochs=1, out=tmp_path / "run", overrides={"train.compile": True}
    )
    assert torch.isfinite(torch.tensor(result.final["train_loss"]))
    assert vitzoo.load(result.run_dir / "last.safetensors").num_classes == 2


def test_progress_is_rich_on_a_terminal_and_plain_lines_elsewhere() -> None:
    import io

    from rich.console import Console

    from vitzoo.training.progress import Reporter

    plain_out = io.StringIO()
    plain = Reporter(Console(file=plain_out, force_terminal=False), log_every=1)
    assert not plain.rich
    plain.start_epoch(1, 2, 2)
    plain.step(1, 0.5, 8, 1e-3)
    plain.step(2, 0.25, 8, 1e-3)
    plain.end_epoch()
    lines = plain_out.getvalue().splitlines()
    assert len(lines) == 2 and "step 2/2 loss 0.2500" in lines[1] and "img/s eta" in lines[1]
    fancy_out = io.StringIO()
    fancy = Reporter(Console(file=fancy_out, force_terminal=True, width=120))
    assert fancy.rich
    fancy.start_epoch(1, 1, 1)
    fancy.step(1, 0.5, 8, 1e-3)
    fancy.end_epoch()
    silent = Reporter(Console(file=io.StringIO()), enabled=False)
    silent.log("hidden")
    assert silent.console.file.getvalue() == ""


def test_digits_example_builds_its_dataset_and_trains(tmp_path: Path) -> None:
    """A one-epoch version of examples/digits.yaml (the full run is measured, not tested)."""
    pytest.importorskip("sklearn")
    import importlib.util

    script = ROOT / "examples" / "make_digits_dataset.py"
    module_spec = importlib.util.spec_from_file_location("make_digits_dataset", script)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    counts = module.write_digits(tmp_path / "digits")
    assert counts == {"train": 1438, "val": 359}
    assert sorted(p.name for p in (tmp_path / "digits" / "val").iterdir()) == list("0123456789")
    result = train(
        ROOT / "examples" / "digits.yaml",
        tmp_path / "digits",
        epochs=1,
        out=tmp_path / "run",
        overrides={"model.depth": 1},
    )
    assert result.classes == list("0123456789")
    assert result.model.input_size == (1, 16, 16)
    assert 0.0 <= result.final["val_accuracy"] <= 1.0
