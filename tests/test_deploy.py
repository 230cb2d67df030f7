"""Deployment: ``vitzoo export``, ONNX Runtime and bf16 inference, ``vitzoo bench``'s report.

Speed itself is never asserted here (benchmarks/ measures it); these tests prove the commands
run end to end on a tiny model and report what they promise.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import vitzoo
from vitzoo.bench.roofline import GemmShape, count_flops
from vitzoo.bench.timing import Spread, interleaved, percentile, rates
from vitzoo.cli import add_builtin_commands, cli
from vitzoo.errors import InputError
from vitzoo.export import BATCH_AXIS, CLASSES_KEY, SPEC_KEY, ExportError, export, format_for
from vitzoo.precision import for_inference
from vitzoo.testing.export_checks import ONNX_ATOL

TINY_SPEC = """\
model:
  type: vit
  image_size: 16
  in_chans: 1
  num_classes: 3
  patch: {type: linear, patch_size: 4}
  dim: 32
  depth: 1
  num_heads: 2
"""

needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="the export extra (onnx, onnxscript, onnxruntime) is not installed",
)


add_builtin_commands(cli)  # what main() does before dispatching (export, bench, predict ...)


def run(*args: str) -> object:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny spec, its checkpoint and three greyscale images."""
    root = tmp_path_factory.mktemp("deploy")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC, encoding="utf-8")
    torch.manual_seed(0)
    checkpoint = vitzoo.save(vitzoo.build(spec), root / "tiny.safetensors")
    images = []
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = (torch.rand(16, 16, generator=gen) * 255).to(torch.uint8).numpy()
        path = root / f"img{i}.png"
        Image.fromarray(pixels, mode="L").save(path)
        images.append(path)
    return {"root": root, "spec": spec, "checkpoint": checkpoint, "images": images}


def test_format_is_named_by_suffix_or_option() -> None:
    assert format_for("m.onnx") == "onnx"
    assert format_for("m.pt2") == "torch-export"
    assert format_for("m.bin", "onnx") == "onnx"
    with pytest.raises(ExportError, match=r"\*.onnx or \*.pt2"):
        format_for("m.bin")


def test_export_torch_program_runs_at_any_batch(tiny: dict[str, Path]) -> None:
    out = tiny["root"] / "tiny.pt2"
    result = run("export", str(tiny["checkpoint"]), "-o", str(out))  # dynamic batch: default
    assert result.exit_code == 0, result.output
    extra = {SPEC_KEY: "", CLASSES_KEY: ""}
    program = torch.export.load(out, extra_files=extra)
    assert "type: vit" in extra[SPEC_KEY]
    assert json.loads(extra[CLASSES_KEY]) == ["class_0", "class_1", "class_2"]
    model = vitzoo.load(tiny["checkpoint"]).eval()
    for batch in (1, 5):
        x = torch.randn(batch, 1, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x), atol=1e-5, rtol=1e-4)


def test_export_error_is_plain(tiny: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["export", str(tiny["spec"]), "-o", "model.bin"])
    assert result.exit_code != 0
    assert "cannot tell the export format" in result.output
    assert "Traceback" not in result.output


@needs_onnx
def test_onnx_export_predicts_like_torch(tiny: dict[str, Path]) -> None:
    onnx_path = tiny["root"] / "tiny.onnx"
    result = run("export", str(tiny["checkpoint"]), "-o", str(onnx_path))
    assert result.exit_code == 0, result.output
    images = [str(p) for p in tiny["images"]]
    ckpt = str(tiny["checkpoint"])
    eager = json.loads(run("predict", ckpt, *images, "-k", "3", "--json").stdout)
    from_file = json.loads(run("predict", str(onnx_path), *images, "-k", "3", "--json").stdout)
    in_memory = json.loads(
        run("predict", ckpt, *images, "-k", "3", "--json", "--runtime", "onnxruntime").output
    )
    for onnx_result in (from_file, in_memory):
        for a, b in zip(eager, onnx_result, strict=True):
            assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
            for ta, tb in zip(a["top"], b["top"], strict=True):
                assert ta["probability"] == pytest.approx(tb["probability"], abs=1e-4)


@needs_onnx
def test_default_onnx_export_takes_any_batch(tiny: dict[str, Path]) -> None:
    """As a timm user's ONNX export: the Python API's defaults give a graph whose batch axis is
    symbolic (named ``batch``), so one image and three run through the same file."""
    import onnxruntime

    model = vitzoo.load(tiny["checkpoint"]).eval()
    path = export(model, tiny["root"] / "default.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.shape == [BATCH_AXIS, 1, 16, 16]
    for batch in (1, 3):
        x = torch.randn(batch, 1, 16, 16)
        (logits,) = session.run(None, {graph_input.name: x.numpy()})
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(torch.from_numpy(logits), expected, atol=ONNX_ATOL, rtol=0)


@needs_onnx
def test_static_batch_graph_refuses_another_batch(tiny: dict[str, Path]) -> None:
    """``--static-batch 2`` fixes the batch axis; a batch of 1 is refused in plain words by
    vitzoo (ONNX Runtime itself says "INVALID_ARGUMENT : Got invalid dimensions for input")."""
    import onnxruntime

    from vitzoo.runtime import OnnxRuntimeModule

    path = tiny["root"] / "static.onnx"
    result = run("export", str(tiny["checkpoint"]), "-o", str(path), "--static-batch", "2")
    assert result.exit_code == 0, result.output
    assert "batch 2 only" in result.output
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 1, 16, 16]
    one = torch.randn(1, 1, 16, 16)
    with pytest.raises(Exception, match="Got invalid dimensions"):  # what ORT alone says
        session.run(None, {"images": one.numpy()})
    module = OnnxRuntimeModule(path)
    assert module(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    with pytest.raises(InputError, match="static batch of 2 .* refuses a batch of 1"):
        module(one)
    predicted = CliRunner().invoke(cli, ["predict", str(path), str(tiny["images"][0])])
    assert predicted.exit_code != 0
    assert "refuses a batch of 1" in predicted.output and "Traceback" not in predicted.output


def test_export_batch_options(tiny: dict[str, Path]) -> None:
    """``--dynamic-batch`` (the old opt-in) is a hidden no-op; with --static-batch it is a
    usage error; a static batch below 1 is refused by the option and by the API."""
    out = tiny["root"] / "alias.pt2"
    result = run("export", str(tiny["spec"]), "-o", str(out), "--dynamic-batch")
    assert result.exit_code == 0 and "any batch size" in result.output
    assert "--dynamic-batch" not in run("export", "--help").output
    both = CliRunner().invoke(
        cli, ["export", str(tiny["spec"]), "-o", str(out), "--dynamic-batch", "--static-batch", "2"]
    )
    assert both.exit_code == 2 and "contradict" in both.output
    zero = CliRunner().invoke(
        cli, ["export", str(tiny["spec"]), "-o", str(out), "--static-batch", "0"]
    )
    assert zero.exit_code == 2 and "--static-batch" in zero.output
    with pytest.raises(ExportError, match="positive integer"):
        export(vitzoo.build(tiny["spec"]), out, static_batch=0)


def test_static_batch_torch_program_is_static(tiny: dict[str, Path]) -> None:
    model = vitzoo.build(tiny["spec"]).eval()
    out = export(model, tiny["root"] / "static.pt2", static_batch=3)
    program = torch.export.load(out).module()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(AssertionError, match=r"size\(\)\[0\] == 3"):  # torch's guard
        program(torch.randn(1, 1, 16, 16))


def test_bf16_inference_casts_weights_once_and_returns_float32(tiny: dict[str, Path]) -> None:
    model = vitzoo.load(tiny["checkpoint"])
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        reference = model.eval()(x)
        fast = for_inference(model, "bf16")
        out = fast(x)
    assert out.dtype == torch.float32
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    assert tuple(fast.input_size) == (1, 16, 16)  # the wrapped model's attributes show through
    torch.testing.assert_close(out, reference, atol=0.1, rtol=0.1)


def test_evaluate_runs_in_bf16_and_onnxruntime(tiny: dict[str, Path]) -> None:
    data = tiny["root"] / "data"
    for i, path in enumerate(tiny["images"]):
        folder = data / f"class_{i}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(path).save(folder / path.name)
    runtimes = [("torch", "fp32"), ("torch", "bf16")]
    if importlib.util.find_spec("onnxruntime") is not None:
        runtimes.append(("onnxruntime", "fp32"))
    reports = {}
    for runtime, precision in runtimes:
        args = ["evaluate", str(tiny["checkpoint"]), "--data", str(data), "--json"]
        result = run(*args, "--runtime", runtime, "--precision", precision)
        assert result.exit_code == 0, result.output
        reports[runtime, precision] = json.loads(result.stdout)
    base = reports["torch", "fp32"]
    assert all(r["samples"] == base["samples"] == 3 for r in reports.values())
    if ("onnxruntime", "fp32") in reports:
        assert reports["onnxruntime", "fp32"]["loss"] == pytest.approx(base["loss"], abs=1e-4)


def test_bench_reports_every_field(tiny: dict[str, Path]) -> None:
    plot = tiny["root"] / "bench.png"
    args = ["bench", str(tiny["spec"]), "--batch", "1,2", "--repeats", "1", "--iters", "1"]
    result = run(*args, "--warmup", "0", "--train", "--json", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("model", "architecture", "params", "device", "threads", "precision", "runtime"):
        assert key in report
    assert report["architecture"] == "vit" and report["precision"] == "fp32"
    assert report["matmul"]["gflops_per_s"]["median"] > 0
    assert [(r["mode"], r["batch"]) for r in report["results"]] == [
        ("infer", 1),
        ("infer", 2),
        ("train", 2),
    ]
    for r in report["results"]:
        assert set(r["images_per_s"]) == {"median", "min", "max"}
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p90"]
        assert r["flops_per_image"] > 0 and 0 < r["gemm_flop_fraction"] <= 1
        assert r["achieved_gflops_per_s"] > 0 and r["matmul_fraction"] > 0
        assert r["dominant_gemm"]
    infer, train = report["results"][1], report["results"][2]
    assert train["flops_per_image"] > 2 * infer["flops_per_image"]  # backward ~ 2x forward
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_impossible_combination(tiny: dict[str, Path]) -> None:
    args = ["bench", str(tiny["spec"]), "--runtime", "onnxruntime", "--precision", "bf16"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "fp32 only" in result.output


def test_flop_count_finds_the_dominant_gemm() -> None:
    big, small = torch.nn.Linear(64, 128), torch.nn.Linear(128, 8)
    x = torch.randn(10, 64)
    count = count_flops(lambda: small(big(x)))
    assert count.dominant == GemmShape(1, 10, 64, 128)
    assert count.total == count.gemm == 2 * 10 * (64 * 128 + 128 * 8)


def test_interleaved_rotates_and_summarises() -> None:
    order: list[str] = []
    workloads = {name: (lambda n=name: order.append(n)) for name in ("a", "b", "c")}
    times = interleaved(workloads, repeats=3, iters=2, warmup=0)
    assert (
        order
        == ["a"] * 2
        + ["b"] * 2
        + ["c"] * 2
        + ["b"] * 2
        + ["c"] * 2
        + ["a"] * 2
        + ["c"] * 2
        + ["a"] * 2
        + ["b"] * 2
    )
    assert all(len(reps) == 3 and all(len(r) == 2 for r in reps) for reps in times.values())
    assert rates([[0.5, 0.5]], 4) == [8.0]  # 4 images a call, 2 calls in 1 s
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
