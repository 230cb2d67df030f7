"""Partial and parameter-efficient fine-tuning: ``train.freeze`` and ``train.lora``.

Freezing is read from every architecture's own layer structure (the model protocol's
``parameter_layers``), so it is tested over every registered architecture's tiny variant; the
training runs use the 16x16 one-block ViT of the training tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from training_helpers import TINY_SPEC, make_dataset

import vitzoo
from vitzoo.checkpoint import read_checkpoint
from vitzoo.cli import cli
from vitzoo.spec import SpecError
from vitzoo.testing import variants
from vitzoo.training.freeze import apply_freeze, is_classifier, plan_freeze
from vitzoo.training.trainer import train

DEEP = {**TINY_SPEC["model"], "depth": 3}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), odd_formats=False)


def spec(**train: object) -> dict:
    return {**TINY_SPEC, "model": DEEP, "train": {**TINY_SPEC["train"], **train}}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


# -- freeze over every architecture ----------------------------------------------------------
@pytest.mark.parametrize("variant", variants(kind="architecture"), ids=lambda v: v.name)
def test_freeze_reads_every_architectures_layers(variant) -> None:
    """backbone: only the classifier trains; N: the last N layers and what follows; deeper than
    the model: a spec error naming the count; every setting is a prefix of the model's depth."""
    model = variant.build()
    layers, deepest = model.parameter_layers()
    names = {n for n, _ in model.named_parameters()}
    backbone = plan_freeze(model, "backbone")
    assert backbone.trainable == {n for n in names if is_classifier(n)}
    assert plan_freeze(model, "none").frozen == frozenset()
    blocks = deepest - 1
    for keep in range(blocks + 1):
        plan = plan_freeze(model, keep)
        assert plan.blocks == blocks
        assert all(layers[n] >= deepest - keep or is_classifier(n) for n in plan.trainable)
        assert all(layers[n] < deepest - keep for n in plan.frozen)
    assert plan_freeze(model, 1).trainable > plan_freeze(model, 0).trainable
    with pytest.raises(SpecError, match=rf"train\.freeze: {blocks + 1} trainable layers asked"):
        plan_freeze(model, blocks + 1)


def test_frozen_parameters_get_no_optimizer_state_nor_gradient() -> None:
    from vitzoo.spec.sections import TrainConfig
    from vitzoo.training.objective import make_objective
    from vitzoo.training.optim import make_optimizer

    model = vitzoo.build({"model": DEEP})
    plan = apply_freeze(model, 1)
    objective = make_objective(vitzoo.builder.resolve_spec({"model": DEEP}), model, None)
    optimizer = make_optimizer(objective, model, TrainConfig())
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert {id(named[n]) for n in plan.trainable} == in_optimizer
    assert not any(id(named[n]) in in_optimizer for n in plan.frozen)


# -- freeze in vitzoo train --------------------------------------------------------------------
def test_freeze_leaves_frozen_tensors_bit_identical(data: Path, tmp_path: Path) -> None:
    start = tmp_path / "start.safetensors"
    vitzoo.save(vitzoo.build({"model": DEEP}), start)
    run = train(spec(freeze=1, init_from=str(start)), data, out=tmp_path / "run")
    before, after = weights(start), weights(run.run_dir / "last.safetensors")
    frozen = [k for k in before if k.startswith(("blocks.0.", "blocks.1.", "patch.", "posenc."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    moved = [k for k in before if k.startswith(("blocks.2.", "head."))]
    assert all(not torch.equal(before[k], after[k]) for k in moved if k.endswith("weight"))


def test_frozen_batchnorm_keeps_its_statistics() -> None:
    """LeViT normalises with BatchNorm everywhere: in a frozen backbone the statistics stay as
    loaded through a training-mode forward, while the trained classifier's BatchNorm learns."""
    from vitzoo.training.freeze import hold_frozen_norms

    model = next(v for v in variants(kind="architecture") if v.name == "levit").build()
    apply_freeze(model, "backbone")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    hold_frozen_norms(model)
    model(torch.randn(4, *model.input_size))
    after = model.state_dict()
    stats = [k for k in before if "running_" in k]
    frozen = [k for k in stats if not is_classifier(k)]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in stats if is_classifier(k))


def test_frozen_backbone_sees_each_steps_augmented_images(data: Path, tmp_path: Path) -> None:
    """Nothing is cached across augmentation: the head's input for the same training images
    differs between epochs when the crops do."""
    seen: list[torch.Tensor] = []
    real = torch.nn.Linear.forward

    def record(self, x):  # the classifier's input, every training step
        if self.out_features == 2 and torch.is_grad_enabled():
            seen.append(x.detach().sum(dim=0))
        return real(self, x)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.Linear, "forward", record)
        train(spec(freeze="backbone", epochs=2, batch_size=16), data, out=tmp_path / "run")
    assert len(seen) == 2  # one full-batch step per epoch, same 16 images
    assert not torch.allclose(seen[0], seen[1])


def test_freeze_deeper_than_the_model_is_one_plain_line(data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["train", "vit-ti16", "--data", str(data), "--out", str(tmp_path / "r")]
        + ["--set", "train.freeze=13", "--set", "model.image_size=16"]
        + ["--set", "model.patch.patch_size=8", "--set", "model.dim=24"],
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.splitlines()[-1] == (
        "train.freeze: 13 trainable layers asked, but this VisionTransformer has 12; "
        "allowed: 0..12, backbone or none"
    )


# -- LoRA --------------------------------------------------------------------------------------
peft = pytest.importorskip("peft")


def test_lora_merged_checkpoint_equals_the_adapted_model(data: Path, tmp_path: Path) -> None:
    lora = {"rank": 2, "alpha": 4.0, "targets": ["qkv", "fc1"], "save_adapter": True}
    run = train(spec(lora=lora, lr=0.01, epochs=3), data, out=tmp_path / "run")
    adapted = run.model.eval()
    deltas = [m.lora_B["default"].weight for n, m in adapted.named_modules() if n.endswith("qkv")]
    assert deltas and all(d.abs().sum() > 0 for d in deltas)  # the adapters did train
    last = run.run_dir / "last.safetensors"
    assert not any("lora" in k or "base_layer" in k for k in weights(last))
    plain = vitzoo.load(last).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected, got = adapted(x), plain(x)
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    adapter = read_checkpoint(run.run_dir / "adapter.safetensors")
    assert adapter[0] and all(".lora_" in k for k in adapter[0])
    assert '"rank": 2' in adapter[1]["vitzoo.lora"]


def test_lora_trains_only_adapters_and_classifier(data: Path, tmp_path: Path) -> None:
    start = tmp_path / "start.safetensors"
    vitzoo.save(vitzoo.build({"model": DEEP}), start)
    run = train(spec(lora={"rank": 2}, init_from=str(start)), data, out=tmp_path / "run")
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("head.") for n in trainable)
    before, after = weights(start), weights(run.run_dir / "last.safetensors")
    untouched = [k for k in before if "qkv" not in k and not k.startswith("head.")]
    assert all(torch.equal(before[k], after[k]) for k in untouched)


def test_lora_resume_equals_uninterrupted(data: Path, tmp_path: Path) -> None:
    lora_spec = spec(lora={"rank": 2, "targets": ["qkv", "proj"]}, lr=0.01)
    full = train(lora_spec, data, epochs=3, out=tmp_path / "full")
    train(lora_spec, data, epochs=1, out=tmp_path / "part")
    resumed = train(lora_spec, data, epochs=3, out=tmp_path / "part", resume=True)
    a = weights(full.run_dir / "last.safetensors")
    b = weights(resumed.run_dir / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_targets_matching_nothing_is_one_plain_line(data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["train", str(_spec_file(tmp_path)), "--data", str(data), "--out", str(tmp_path / "r")]
        + ["--set", "train.lora={targets: [q_proj]}"],
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.output.splitlines()[-1]
    assert "train.lora.targets: ['q_proj'] match no linear layer" in last
    assert "named: fc1, fc2, proj, qkv" in last
    # a misspelt target beside one that matches is refused too, not silently dropped
    result = CliRunner().invoke(
        cli,
        ["train", str(_spec_file(tmp_path)), "--data", str(data), "--out", str(tmp_path / "s")]
        + ["--set", "train.lora={targets: [qkv, fc_1]}"],
    )
    assert result.exit_code == 2, result.output
    assert "train.lora.targets: ['fc_1'] match no linear layer" in result.output.splitlines()[-1]


def test_lora_refuses_a_freeze_or_an_ema_beside_it() -> None:
    with pytest.raises(SpecError, match="train.freeze: train.lora freezes"):
        vitzoo.builder.resolve_spec(spec(lora={"rank": 2}, freeze="backbone"))
    with pytest.raises(SpecError, match="train.ema_decay: a weight EMA is not kept"):
        vitzoo.builder.resolve_spec(spec(lora={"rank": 2}, ema_decay=0.9))


def _spec_file(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec()), encoding="utf-8")
    return path
