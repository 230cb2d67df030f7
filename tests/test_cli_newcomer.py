"""Issue 20, the command line: exit codes and streams (item 6), output noise (item 8) and what
a timm/HF user looks for in ``--help`` (item 9).

The rule under test (README, "Exit status"): bad input is plain lines on stderr and exit 2;
partial results (some inputs unreadable) are printed, the skipped inputs and a count go to
stderr, exit 3.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from training_helpers import TINY_SPEC, make_dataset

import vitzoo
from tests.weights_helpers import save_tiny_hf_vit
from vitzoo.cli import add_builtin_commands, cli
from vitzoo.commands.errors import EXIT_INPUT, EXIT_PARTIAL
from vitzoo.formats import CLASSES_KEY

add_builtin_commands(cli)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-class checkpoint (so top-5 means something) with named classes."""
    root = tmp_path_factory.mktemp("ckpt")
    spec = {"model": {**TINY_SPEC["model"], "num_classes": 7}}
    path = root / "tiny.safetensors"
    classes = [f"c{i}" for i in range(7)]
    vitzoo.save(vitzoo.build(spec), path, metadata={CLASSES_KEY: json.dumps(classes)})
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    classes = tuple(f"c{i}" for i in range(7))
    return make_dataset(
        tmp_path_factory.mktemp("data"), classes=classes, per_class=1, val_per_class=2
    )


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.json"
    path.write_text(json.dumps(TINY_SPEC))
    return path


# -- item 6: one rule -------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["missing", "empty", "strict"])
def test_data_errors_are_bad_input(tmp_path: Path, spec_file: Path, case: str) -> None:
    data = tmp_path / "data"
    args = [str(spec_file), "--data", str(data), "--out", str(tmp_path / "run")]
    if case == "empty":
        (data / "train").mkdir(parents=True)
    if case == "strict":
        make_dataset(data, per_class=2, val_per_class=1)
        (data / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
        args.append("--strict-data")
    result = run("train", *args)
    assert result.exit_code == EXIT_INPUT, result.output
    assert result.stdout == "" and result.stderr.strip()
    assert not result.stderr.startswith(("Error:", "Usage:")) and "Traceback" not in result.stderr


def test_attention_on_a_bad_image_is_bad_input(tmp_path: Path, ckpt: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    result = run("attention", str(ckpt), str(bad), "-o", str(tmp_path / "o.png"))
    assert result.exit_code == EXIT_INPUT and "not an image" in result.stderr, result.output
    assert "Error:" not in result.output


def test_predict_partial_results(tmp_path: Path, ckpt: Path, data: Path) -> None:
    good = next((data / "val" / "c0").iterdir())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    result = run("predict", str(ckpt), str(good), str(bad), "--json")
    assert result.exit_code == EXIT_PARTIAL, result.output
    rows = json.loads(result.stdout)  # stdout holds only the JSON
    assert [r["image"] for r in rows] == [str(good), str(bad)] and "error" in rows[1]
    assert "bad.png" in result.stderr and "1 of 2 inputs could not be read" in result.stderr
    table = run("predict", str(ckpt), str(good), str(bad))
    assert table.exit_code == EXIT_PARTIAL and "bad.png" not in table.stdout
    only_bad = run("predict", str(ckpt), str(bad))
    assert only_bad.exit_code == EXIT_INPUT


def test_evaluate_partial_results_and_top5(tmp_path: Path, ckpt: Path, data: Path) -> None:
    result = run("evaluate", str(ckpt), "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0.0 <= report["top5_accuracy"] <= 1.0 and report["top5_accuracy"] >= report["accuracy"]
    text = run("evaluate", str(ckpt), "--data", str(data))
    assert "top-5 accuracy" in text.stdout
    broken = data / "val" / "c1" / "broken.png"
    broken.write_bytes(b"nope")
    try:
        partial = run("evaluate", str(ckpt), "--data", str(data), "--json")
        assert partial.exit_code == EXIT_PARTIAL, partial.output
        assert json.loads(partial.stdout)["samples"] == 14 and "broken.png" in partial.stderr
        strict = run("evaluate", str(ckpt), "--data", str(data), "--strict-data")
        assert strict.exit_code == EXIT_INPUT
    finally:
        broken.unlink()


def test_export_errors_are_bad_input(tmp_path: Path, spec_file: Path) -> None:
    result = run("export", str(spec_file), "-o", str(tmp_path / "model.txt"))
    assert result.exit_code == EXIT_INPUT and "cannot tell the export format" in result.stderr


def test_vitzoo_warnings_are_one_plain_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import warnings

    from vitzoo.commands.errors import show_warnings_plainly
    from vitzoo.errors import WeightsAdaptationWarning

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored afterwards
    show_warnings_plainly()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("head re-initialised: 2 -> 3 classes", WeightsAdaptationWarning, stacklevel=1)
    assert capsys.readouterr().err == "warning: head re-initialised: 2 -> 3 classes\n"


def test_the_readme_states_the_rule() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "**Exit status, every command:**" in readme and "`3` partial" in readme


# -- item 8: noise and padding ----------------------------------------------------------------
def test_piped_tables_carry_no_trailing_spaces() -> None:
    result = run("list", "--kind", "preset")
    lines = result.output.splitlines()
    assert lines and not [line for line in lines if line != line.rstrip()]
    assert any(line.split()[:1] == ["vit-b16"] for line in lines)


def test_tiny_models_show_macs_in_a_unit_that_fits(spec_file: Path) -> None:
    text = run("build", str(spec_file), "--no-forward").output
    assert "KMACs (multiply-accumulates)" in text and "0.00" not in text
    info = json.loads(run("build", str(spec_file), "--no-forward", "--json").stdout)
    assert info["macs"] > 0


def test_export_prints_no_torch_notices(tmp_path: Path, spec_file: Path) -> None:
    pytest.importorskip("onnxscript")
    command = [
        sys.executable,
        "-m",
        "vitzoo",
        "export",
        str(spec_file),
        "-o",
        str(tmp_path / "m.onnx"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote "), lines


def test_onnx_evaluation_prints_no_torch_notices(tmp_path: Path, ckpt: Path, data: Path) -> None:
    pytest.importorskip("onnxruntime")
    command = [sys.executable, "-m", "vitzoo", "evaluate", str(ckpt), "--data", str(data)]
    done = subprocess.run(
        [*command, "--runtime", "onnxruntime", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # no torchvision notices, no FutureWarning


def test_bench_measures_peak_memory_and_reports_bf16(spec_file: Path) -> None:
    args = ["bench", str(spec_file), "--batch", "4", "--repeats", "1", "--iters", "1", "--json"]
    report = json.loads(run(*args).stdout)  # stderr may carry a busy-machine warning
    peak = report["results"][0]["peak_memory_mib"]
    assert peak is None or peak > 0.0  # measured, or said unavailable; never a made-up 0.0
    if sys.platform.startswith("linux"):
        assert peak is not None and peak > 0.0
    assert set(report["cpu_bf16"]) == {"native", "avx512_bf16", "amx"}


# -- item 9: what a timm/HF user looks for ----------------------------------------------------
def test_train_shortcuts_go_through_the_override_path(tmp_path: Path, spec_file: Path) -> None:
    help_text = run("train", "--help").output
    for flag in ("--lr", "--device", "--workers", "--num-classes", "--img-size"):
        assert flag in help_text
    data = make_dataset(tmp_path / "data", per_class=2, val_per_class=1)
    base = [str(spec_file), "--data", str(data), "--out", str(tmp_path / "run")]
    bad = run("train", *base, "--lr", "-1")
    assert bad.exit_code == EXIT_INPUT and bad.stderr.startswith("--lr -1.0  train.lr:"), bad.output
    ok = run("train", *base, "--lr", "3e-3", "--img-size", "32", "--workers", "0", "--epochs", "1",
             "--device", "cpu", "--json")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    spec = (tmp_path / "run" / "spec.yaml").read_text()
    assert "lr: 0.003" in spec and "image_size: 32" in spec and "device: cpu" in spec


def test_export_opset_and_input_size(tmp_path: Path, ckpt: Path) -> None:
    onnx = pytest.importorskip("onnx")
    target = tmp_path / "m.onnx"
    result = run("export", str(ckpt), "-o", str(target), "--opset", "18", "--img-size", "32")
    assert result.exit_code == 0, result.output
    proto = onnx.load(str(target))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 32, 32]
    bad = run("export", str(ckpt), "-o", str(tmp_path / "m.pt2"), "--opset", "18")
    assert bad.exit_code == EXIT_INPUT


def test_info_shows_spec_classes_preprocessing_provenance(ckpt: Path) -> None:
    text = run("info", str(ckpt))
    assert text.exit_code == 0, text.output
    assert (
        "classes (7): c0, c1" in text.stdout and "preprocessing: input (3, 16, 16)" in text.stdout
    )
    assert "format vitzoo" in text.stdout and "type: vit" in text.stdout
    info = json.loads(run("info", str(ckpt), "--json").stdout)
    assert info["classes"][:2] == ["c0", "c1"] and info["spec"]["model"]["num_classes"] == 7
    assert info["preprocessing"]["input_size"] == [3, 16, 16]
    assert info["provenance"]["format"] == "vitzoo"
    missing = run("info", "no/such.safetensors")
    assert missing.exit_code == EXIT_INPUT


def test_info_on_a_hugging_face_folder(tmp_path: Path) -> None:
    save_tiny_hf_vit(tmp_path / "hf")
    info = json.loads(run("info", str(tmp_path / "hf"), "--json").stdout)
    assert info["classes"] == ["stripes", "dots"]
    assert info["spec"]["model"]["norm_eps"] == 1e-12
    assert info["provenance"]["format"] == "hf" and info["provenance"]["converter"]
