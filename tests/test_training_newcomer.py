"""Issue 20, training: what a new user hit fine-tuning and reading a run.

* item 3: ``train.init_from`` alone, and a checkpoint given where the spec goes;
* item 4: the trainer hands the data's class names to the weights (rows matched by name);
* item 5: ``best.safetensors`` breaks accuracy ties by validation loss; the spec picks the metric;
* item 11: the run says how many threads it uses;
* item 12: bf16 on a CPU without bf16 instructions says so in one line.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console
from training_helpers import TINY_SPEC, make_dataset

import vitzoo
from vitzoo.commands.train import train as train_cmd
from vitzoo.formats import CLASSES_KEY
from vitzoo.training.evaluation import best_epoch, is_new_best
from vitzoo.training.trainer import train


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


def console() -> Console:
    return Console(file=io.StringIO(), width=400)


def logged(out: Console) -> str:
    return out.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def swapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint trained on classes ["stripes", "dots"] and a folder listing them sorted
    (["dots", "stripes"]): the issue's reproducer."""
    root = tmp_path_factory.mktemp("swapped")
    data = make_dataset(root / "data", classes=("dots", "stripes"), per_class=4, val_per_class=2)
    torch.manual_seed(0)
    model = vitzoo.build(TINY_SPEC)
    ckpt = root / "stripes-dots.safetensors"
    vitzoo.save(model, ckpt, metadata={CLASSES_KEY: json.dumps(["stripes", "dots"])})
    return ckpt, data


# -- items 3 and 4 ----------------------------------------------------------------------------
def test_init_from_alone_fine_tunes_with_classes_matched(swapped, tmp_path: Path) -> None:
    ckpt, data = swapped
    spec = {"train": {"init_from": str(ckpt), "epochs": 1, "batch_size": 4, "log_every": 100}}
    out = console()
    result = train(spec, data, out=tmp_path / "run", console=out)  # no model section
    text = logged(out)
    assert result.model.vitzoo_spec.model.dim == TINY_SPEC["model"]["dim"]
    assert "head rows matched by class name" in text and "2 moved" in text, text
    assert result.classes == ["dots", "stripes"]


def test_a_checkpoint_is_the_spec_on_the_command_line(swapped, tmp_path: Path) -> None:
    ckpt, data = swapped
    args = [str(ckpt), "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"]
    result = CliRunner().invoke(train_cmd, [*args, "--batch-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"] == ["dots", "stripes"]


def test_init_from_a_state_dict_without_a_name_says_what_to_add(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    data = make_dataset(tmp_path / "data", per_class=2, val_per_class=1)
    weights = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(1)}, str(weights))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"train:\n  init_from: {weights}\n")
    result = CliRunner().invoke(train_cmd, [str(spec), "--data", str(data)])
    assert result.exit_code == 2 and "preset: NAME" in result.stderr, result.output


# -- item 5 -----------------------------------------------------------------------------------
HISTORY = [
    {"epoch": 1, "val_accuracy": 0.9, "val_loss": 0.289, "val_balanced_accuracy": 0.9},
    {"epoch": 2, "val_accuracy": 0.8, "val_loss": 0.2, "val_balanced_accuracy": 0.95},
    {"epoch": 3, "val_accuracy": 0.9, "val_loss": 0.052, "val_balanced_accuracy": 0.9},
]


def test_ties_go_to_the_lower_validation_loss() -> None:
    assert best_epoch(HISTORY, "val_accuracy") == 3
    assert is_new_best(HISTORY[:2], HISTORY[2], "val_accuracy")
    assert not is_new_best(HISTORY, dict(HISTORY[2], epoch=4), "val_accuracy")  # equal: keep


def test_the_spec_chooses_the_metric(tmp_path: Path) -> None:
    assert best_epoch(HISTORY, "val_loss") == 3
    assert best_epoch(HISTORY, "val_balanced_accuracy") == 2
    no_val = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]
    assert best_epoch(no_val, "val_loss") == 2 and best_epoch(no_val, "val_accuracy") is None
    spec = vitzoo.resolve_spec({**TINY_SPEC, "train": {"best_metric": "val_loss"}})
    assert spec.train.best_metric == "val_loss"
    with pytest.raises(vitzoo.SpecError, match="val_balanced_accuracy"):
        vitzoo.resolve_spec({**TINY_SPEC, "train": {"best_metric": "top5"}})


def test_the_run_keeps_the_tie_with_the_lower_loss(tmp_path: Path, monkeypatch) -> None:
    from vitzoo.training import evaluation

    rows = iter(HISTORY)

    def scripted(self, model, raw_model=None):  # noqa: ANN001 - Validation.columns
        row = next(rows)
        return {k: v for k, v in row.items() if k != "epoch"}

    monkeypatch.setattr(evaluation.Validation, "columns", scripted)
    data = make_dataset(tmp_path / "data", per_class=2, val_per_class=1)
    spec = {**TINY_SPEC, "train": {**TINY_SPEC["train"], "epochs": 3, "batch_size": 4}}
    result = train(spec, data, out=tmp_path / "run", console=console())
    best = vitzoo.checkpoint.read_checkpoint(tmp_path / "run" / "best.safetensors")[1]
    assert best["vitzoo.train.epoch"] == "3", best  # epoch 1 had the same accuracy
    assert result.history[-1]["val_loss"] == 0.052


# -- item 11 ----------------------------------------------------------------------------------
def test_the_run_says_its_threads_and_warns_on_a_busy_machine(tmp_path: Path, monkeypatch) -> None:
    from vitzoo.bench import timing
    from vitzoo.terminal import plural

    data = make_dataset(tmp_path / "data", per_class=2, val_per_class=1)
    spec = {**TINY_SPEC, "train": {**TINY_SPEC["train"], "epochs": 1}}
    out = console()
    train(spec, data, out=tmp_path / "run", console=out)
    assert f"on 1 x cpu ({plural(torch.get_num_threads(), 'thread')})" in logged(out)
    monkeypatch.setattr(timing.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (7.4, 7.0, 7.0), raising=False)
    busy = timing.oversubscription(2, what="training")
    assert "2 torch threads on 2 cores of a busy machine" in busy and "OMP_NUM_THREADS=1" in busy
    assert timing.oversubscription(1) is None  # one thread never waits for another
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (1.0, 1.0, 1.0), raising=False)
    assert timing.oversubscription(2) is None  # an idle machine: torch's default is right


# -- item 12 ----------------------------------------------------------------------------------
def test_bf16_without_native_support_says_so(tmp_path: Path, monkeypatch) -> None:
    from vitzoo import precision

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert "no native bf16" in precision.slow_bf16_note("cpu")
    assert precision.slow_bf16_note("cuda") is None
    data = make_dataset(tmp_path / "data", per_class=2, val_per_class=1)
    spec = {**TINY_SPEC, "train": {**TINY_SPEC["train"], "epochs": 1, "precision": "bf16"}}
    out = console()
    train(spec, data, out=tmp_path / "run", console=out)
    lines = [line for line in logged(out).splitlines() if "no native bf16" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: train.precision=bf16"), lines
    with pytest.warns(vitzoo.errors.PerformanceWarning, match="no native bf16"):
        precision.for_inference(vitzoo.build(TINY_SPEC), "bf16")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert precision.slow_bf16_note("cpu") is None
