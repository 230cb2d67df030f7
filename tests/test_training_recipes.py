"""Small-data recipes: EMA, layer decay, accumulation, fp16, class balance, CSV labels,
augmentations (seeded, resume-exact), Ctrl-C, per-class reports and the plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageOps
from rich.console import Console
from training_helpers import TINY_SPEC, make_dataset

import vitzoo
from vitzoo.checkpoint import read_checkpoint
from vitzoo.commands.predict import predict as predict_cmd
from vitzoo.commands.train import evaluate as evaluate_cmd
from vitzoo.commands.train import resume_command
from vitzoo.data import augment
from vitzoo.data.folders import EpochBatches, SampleIndex, balanced_weights
from vitzoo.data.folders import generator as seeded
from vitzoo.data.images import DataError
from vitzoo.plugins import get_registry
from vitzoo.spec import TrainConfig
from vitzoo.training import optim, plots
from vitzoo.training.inference import evaluate
from vitzoo.training.report import classification_report
from vitzoo.training.run import TrainingRun
from vitzoo.training.trainer import TrainingInterrupted, class_loss_weights, train


def quiet() -> Console:
    return Console(file=io.StringIO())


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- augmentation ops --------------------------------------------------------------------------
def test_ops_match_pillow_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 10, 3)).astype(np.uint8)
    img = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    pil = Image.fromarray(pixels)

    def as_tensor(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0

    torch.testing.assert_close(augment.equalize(img), as_tensor(ImageOps.equalize(pil)))
    torch.testing.assert_close(augment.posterize(img, 3), as_tensor(ImageOps.posterize(pil, 3)))
    torch.testing.assert_close(
        augment.solarize(img, 128 / 255), as_tensor(ImageOps.solarize(pil, 128)), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(augment.affine(img), img, atol=1e-5, rtol=0)  # no-op affine
    for name in augment.OP_NAMES:
        out = augment.apply_op(img, name, 0.7, seeded(1))
        again = augment.apply_op(img, name, 0.7, seeded(1))
        assert out.shape == img.shape and torch.equal(out, again), name
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0, name
    clip = img.unsqueeze(0).repeat(3, 1, 1, 1)  # (T, C, H, W): every frame gets the same op
    moved = augment.rand_augment(clip, seeded(5), ops=2, magnitude=15)
    assert all(torch.equal(moved[0], moved[t]) for t in range(3))
    erased = augment.random_erasing(clip, 1.0, (0.2, 0.3), seeded(2))
    changed = (erased != clip).any(dim=1)  # (T, H, W): the same rectangle in every frame
    assert changed.any() and torch.equal(changed[0], changed[2])


# -- layer decay ---------------------------------------------------------------------------------
def test_layer_decay_gives_each_depth_its_rate() -> None:
    model = vitzoo.build({"model": {**TINY_SPEC["model"], "depth": 2}})
    objective = vitzoo.build_objective("supervised", model)
    cfg = TrainConfig(lr=1.0, layer_decay=0.5)
    opt = optim.make_optimizer(objective, model, cfg)
    optim.set_lr(opt, 1.0)
    names = {id(p): n for n, p in objective.named_parameters()}
    rate = {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert rate["model.patch.proj.weight"] == rate["model.cls_token"] == 0.5**3
    assert rate["model.blocks.0.attn.qkv.weight"] == 0.5**2
    assert rate["model.blocks.1.mlp.fc1.bias"] == 0.5
    assert rate["model.head.fc.weight"] == rate["model.norm.weight"] == 1.0
    decays = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays["model.blocks.0.attn.qkv.bias"] == 0.0 and decays["model.head.fc.weight"] > 0


def test_every_architecture_has_parameter_depths_with_the_head_deepest() -> None:
    registry = get_registry()
    for entry in registry.entries("architecture"):
        model = vitzoo.build({"model": {"type": entry.name, **(entry.example or {})}})
        layers, deepest = model.parameter_layers()
        assert set(layers) == {n for n, _ in model.named_parameters()}, entry.name
        head = [n for n in layers if n.split(".")[0].startswith("head")]
        assert head and all(layers[n] == deepest for n in head), entry.name
        assert len(set(layers.values())) >= 3 and min(layers.values()) == 0, entry.name


# -- accumulation, fp16, EMA ---------------------------------------------------------------------
def test_accumulating_k_micro_batches_equals_one_full_batch(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gradient the optimiser sees is the full batch's (checked before Adam, whose
    normalisation would hide a wrong scale), and the runs end at the same weights."""
    spec = {**TINY_SPEC, "model": {**TINY_SPEC["model"], "depth": 2}}
    seen: list[list[torch.Tensor]] = []
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append([p.grad.detach().clone() for g in self.param_groups for p in g["params"]])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    one = train(spec, data, epochs=1, out=tmp_path / "one", console=quiet())
    four = train(
        spec,
        data,
        epochs=1,
        out=tmp_path / "four",
        overrides={"train.accumulation_steps": 4},
        console=quiet(),
    )
    assert len(seen) == 4  # two steps per run: accumulation does not add optimiser steps
    for full, accumulated in zip(seen[0], seen[2], strict=True):
        torch.testing.assert_close(accumulated, full, rtol=1e-5, atol=1e-8)
    a, b = weights(one.run_dir / "last.safetensors"), weights(four.run_dir / "last.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=0)
    assert one.final["train_loss"] == pytest.approx(four.final["train_loss"], rel=1e-5)


def test_fp16_with_gradient_scaler_trains_and_checkpoints_the_scale(
    data: Path, tmp_path: Path
) -> None:
    result = train(
        TINY_SPEC,
        data,
        out=tmp_path / "run",
        overrides={"train.precision": "fp16"},
        console=quiet(),
    )
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    _, meta = read_checkpoint(next((tmp_path / "run").glob("state-*.safetensors")))
    scaler = json.loads(meta["vitzoo.train.progress"])["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler
    start = weights(tmp_path / "run" / "last.safetensors")
    again = train(
        TINY_SPEC,
        data,
        epochs=3,
        out=tmp_path / "run",
        resume=True,
        overrides={"train.precision": "fp16"},
        console=quiet(),
    )
    assert not same(start, weights(again.run_dir / "last.safetensors"))


def test_ema_weights_differ_from_raw_and_are_the_ones_evaluated(data: Path, tmp_path: Path) -> None:
    result = train(
        TINY_SPEC,
        data,
        epochs=3,
        out=tmp_path / "run",
        overrides={"train.ema_decay": 0.9},
        console=quiet(),
    )
    run = result.run_dir
    raw, ema = weights(run / "last.safetensors"), weights(run / "ema.safetensors")
    assert raw.keys() == ema.keys() and not same(raw, ema)
    last = result.history[-1]
    assert last["val_loss"] != last["raw_val_loss"]
    assert evaluate(run / "ema.safetensors", data)["loss"] == pytest.approx(
        last["val_loss"], rel=1e-5
    )
    assert evaluate(run / "last.safetensors", data)["loss"] == pytest.approx(
        last["raw_val_loss"], rel=1e-5
    )
    best_epoch = max(result.history, key=lambda r: r["val_accuracy"])["epoch"]
    if best_epoch == last["epoch"]:
        assert same(weights(run / "best.safetensors"), ema)
    assert result.report["accuracy"] == pytest.approx(
        max(r["val_accuracy"] for r in result.history)
    )


# -- class balance and CSV labels -------------------------------------------------------------
def test_balanced_class_weights_and_sampler(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, per_class=4, odd_formats=False)
    for i in range(8):  # 12 cats, 4 dogs
        Image.new("RGB", (16, 16), (i, 0, 0)).save(root / "train" / "cat" / f"extra{i}.png")
    folder = SampleIndex.scan(root / "train")
    assert folder.class_counts() == [12, 4]
    assert class_loss_weights(folder).tolist() == pytest.approx([16 / 24, 16 / 8])
    drawn = [0, 0]
    for epoch in range(20):
        for batch in EpochBatches(
            16, 8, epoch=epoch, seed=0, train=True, sample_weights=balanced_weights(folder)
        ):
            for index, _ in batch:
                drawn[folder.samples[index][1]] += 1
    assert abs(drawn[0] - drawn[1]) < 0.15 * sum(drawn)
    result = train(
        TINY_SPEC,
        root,
        epochs=1,
        out=tmp_path / "run",
        console=quiet(),
        overrides={"train.class_weights": "balanced", "data.sampler": "balanced"},
    )
    assert torch.isfinite(torch.tensor(result.final["train_loss"]))


def test_a_csv_labelled_folder_trains_and_evaluates(data: Path, tmp_path: Path) -> None:
    flat = tmp_path / "faces"
    for split in ("train", "val"):
        (flat / "images").mkdir(parents=True, exist_ok=True)
        with (flat / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            for cls in ("cat", "dog"):
                for image in sorted((data / split / cls).iterdir()):
                    name = f"{split}-{cls}-{image.name}"
                    (flat / "images" / name).write_bytes(image.read_bytes())
                    writer.writerow([f"images/{name}", "female" if cls == "cat" else "male"])
    result = train(
        TINY_SPEC,
        flat,
        epochs=1,
        out=tmp_path / "run",
        console=quiet(),
        overrides={"data.train_csv": "train.csv", "data.val_csv": "val.csv"},
    )
    assert result.classes == ["female", "male"] and "val_accuracy" in result.final
    report = evaluate(result.run_dir / "best.safetensors", flat)  # uses the spec's val_csv
    assert report["samples"] == 8 and report["classes"] == ["female", "male"]
    bad = tmp_path / "bad.csv"
    bad.write_text("images/x.png\n")
    with pytest.raises(DataError, match=r"bad.csv:1: expected 'path,label'"):
        SampleIndex.from_csv(bad)


# -- resume is bit-exact with every augmentation on, also after Ctrl-C mid-epoch -------------------
AUGMENTED = {
    "data.auto_augment": "rand",
    "data.color_jitter": 0.3,
    "data.random_erasing": 0.5,
    "train.ema_decay": 0.8,
    "data.sampler": "balanced",
    "model.drop_path_rate": 0.1,
}


def test_resume_after_an_interrupt_mid_epoch_is_bit_exact(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = train(
        TINY_SPEC, data, epochs=3, out=tmp_path / "full", overrides=AUGMENTED, console=quiet()
    )
    trivial = {**AUGMENTED, "data.auto_augment": "trivial"}
    real_step = TrainingRun.train_step
    calls = {"n": 0}

    def interrupted_step(self, images, targets):  # Ctrl-C arriving inside the 4th step
        calls["n"] += 1
        if calls["n"] == 4:
            torch.rand(3)  # the unfinished step already drew from the global RNG
            raise KeyboardInterrupt
        return real_step(self, images, targets)

    monkeypatch.setattr(TrainingRun, "train_step", interrupted_step)
    with pytest.raises(TrainingInterrupted) as stop:
        train(
            TINY_SPEC, data, epochs=3, out=tmp_path / "part", overrides=AUGMENTED, console=quiet()
        )
    assert stop.value.saved and (stop.value.epoch, stop.value.epoch_step) == (1, 1)
    monkeypatch.setattr(TrainingRun, "train_step", real_step)
    resumed = train(
        TINY_SPEC,
        data,
        epochs=3,
        out=tmp_path / "part",
        resume=True,
        overrides=AUGMENTED,
        console=quiet(),
    )
    assert same(
        weights(full.run_dir / "last.safetensors"), weights(resumed.run_dir / "last.safetensors")
    )
    assert same(
        weights(full.run_dir / "ema.safetensors"), weights(resumed.run_dir / "ema.safetensors")
    )
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
    # TrivialAugment resumes exactly too (epoch boundary)
    a = train(
        TINY_SPEC, data, epochs=2, out=tmp_path / "t-full", overrides=trivial, console=quiet()
    )
    train(TINY_SPEC, data, epochs=1, out=tmp_path / "t-part", overrides=trivial, console=quiet())
    b = train(
        TINY_SPEC,
        data,
        epochs=2,
        out=tmp_path / "t-part",
        resume=True,
        overrides=trivial,
        console=quiet(),
    )
    assert same(weights(a.run_dir / "last.safetensors"), weights(b.run_dir / "last.safetensors"))


def test_resume_command_is_exact() -> None:
    command = resume_command(
        "my spec.yaml", Path("data/x"), Path("runs/a"), 5, None, True, ("train.lr=1e-4",)
    )
    assert command == (
        "vitzoo train 'my spec.yaml' --data data/x --out runs/a --epochs 5 --strict-data "
        "--set train.lr=1e-4 --resume"
    )


# -- data and CLI polish ----------------------------------------------------------------------
def test_one_class_is_refused_and_empty_class_folders_warn(tmp_path: Path) -> None:
    one = make_dataset(tmp_path / "one", classes=("cat",), per_class=4)
    with pytest.raises(DataError, match="only one class"):
        train(TINY_SPEC, one, out=tmp_path / "run1", console=quiet())
    root = make_dataset(tmp_path / "two", per_class=4)
    (root / "train" / "bird").mkdir()
    out = io.StringIO()
    train(TINY_SPEC, root, epochs=1, out=tmp_path / "run2", console=Console(file=out, width=300))
    assert "bird holds no usable images" in out.getvalue()


def test_evaluate_and_predict_messages(data: Path, tmp_path: Path) -> None:
    result = train(TINY_SPEC, data, epochs=1, out=tmp_path / "run", console=quiet())
    ckpt = str(result.run_dir / "last.safetensors")
    runner = CliRunner()
    missing = runner.invoke(evaluate_cmd, [ckpt, "--data", str(data), "--split", "test"])
    assert missing.exit_code != 0 and f"no split 'test' in {data}" in missing.output
    report = json.loads(runner.invoke(evaluate_cmd, [ckpt, "--data", str(data), "--json"]).stdout)
    for key in ("balanced_accuracy", "per_class_precision", "per_class_recall", "support"):
        assert key in report
    table = runner.invoke(
        evaluate_cmd, [ckpt, "--data", str(data), "--confusion-png", str(tmp_path / "c.png")]
    )
    assert "balanced accuracy" in table.output and "precision" in table.output
    assert Image.open(tmp_path / "c.png").size[0] > 200
    image = str(next((data / "val" / "cat").iterdir()))
    zero = runner.invoke(predict_cmd, [ckpt, image, "--top-k", "0"])
    assert zero.exit_code == 2 and "--top-k" in zero.output
    # a checkpoint whose class list disagrees with its outputs warns
    tensors, meta = read_checkpoint(ckpt)
    from safetensors.torch import save_file

    meta = {**meta, "vitzoo.classes": json.dumps(["a", "b", "c"])}
    odd = tmp_path / "odd.safetensors"
    save_file(tensors, str(odd), metadata=meta)
    with pytest.warns(UserWarning, match="names 3 classes but the model has 2 outputs"):
        vitzoo.training.load_classifier(odd)
    assert (result.run_dir / "confusion.png").is_file()
    assert json.loads((result.run_dir / "evaluation.json").read_text())["classes"] == ["cat", "dog"]


def test_classification_report_from_a_confusion_matrix() -> None:
    report = classification_report([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    assert report["accuracy"] == pytest.approx(5 / 8)
    assert report["per_class_recall"] == [0.75, None, 0.5]
    assert report["per_class_precision"] == [0.6, 0.0, 1.0]
    assert report["balanced_accuracy"] == pytest.approx(0.625)  # the empty class is left out
    assert report["support"] == [4, 0, 4]


def test_plots_have_round_ticks_and_mark_the_best_epoch(tmp_path: Path) -> None:
    assert plots.nice_ticks(0.23, 0.97) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert plots.epoch_ticks(30)[:3] == [1, 5, 10]
    history = [
        {
            "epoch": e,
            "lr": 1e-3 / e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 0.5 + e / 20,
            "val_accuracy": [0.5, 0.7, 0.7, 0.6][e - 1],
        }
        for e in range(1, 5)
    ]
    # epochs 2 and 3 tie on accuracy; 3 has the lower validation loss (issue 20, item 5)
    assert plots.best_epoch(history) == 3
    plots.draw_with_pillow(history, tmp_path / "fallback.png")
    plots.plot_curves(history, tmp_path / "curves.png")
    for name in ("fallback.png", "curves.png"):
        with Image.open(tmp_path / name) as img:
            assert img.size[0] >= 1000 and img.format == "PNG"
