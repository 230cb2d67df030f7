"""CLI: ``vitzoo export`` (ONNX / torch.export) and ``vitzoo bench`` (speed against the roofline).

The work is in :mod:`vitzoo.export` and :mod:`vitzoo.bench`; this module parses options and
prints.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from vitzoo.commands.common import image_size
from vitzoo.commands.errors import user_errors
from vitzoo.terminal import make_console, plural


def _load(source: str) -> Any:
    """A checkpoint, spec file or preset, with plain errors (never a traceback, exit 2)."""
    from vitzoo.commands.inspect import load_model

    with user_errors():
        return load_model(source)


@click.command("export")
@click.argument("source")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="model.onnx or model.pt2 (the suffix picks the format unless --format is given).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "torch-export"]),
    default=None,
    help="onnx: ONNX graph for ONNX Runtime; torch-export: a torch.export program (.pt2).",
)
@click.option(
    "--static-batch",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Fix the batch size to N, for runtimes that need static shapes "
    "(default: any batch size, as a timm/HF export).",
)
@click.option(
    # The batch became dynamic by default; the old flag (README before that) still works.
    "--dynamic-batch",
    is_flag=True,
    hidden=True,
    help="Accepted for old scripts; the batch is dynamic by default.",
)
@click.option(
    "--opset",
    type=click.IntRange(min=1),
    default=None,
    help="ONNX opset version (default: the exporter's, 18 with torch 2.13).",
)
@click.option(
    "--img-size",
    "img_size",
    default=None,
    metavar="N|H,W",
    help="Export at this input size (learned positions resampled, as set_input_size does; "
    "default: the model's own).",
)
def export_command(
    source: str,
    output: Path,
    fmt: str | None,
    static_batch: int | None,
    dynamic_batch: bool,
    opset: int | None,
    img_size: str | None,
) -> None:
    """Export SOURCE (a checkpoint, spec file or preset) for deployment.

    The graph takes any batch size (one image or many) unless --static-batch N fixes it. The
    file carries the spec, input size and class names (from a checkpoint written by
    `vitzoo train`), so `vitzoo predict --runtime onnxruntime model.onnx` needs nothing else.
    """
    from vitzoo.checkpoint import read_checkpoint
    from vitzoo.export import export
    from vitzoo.training.state import class_names

    if dynamic_batch and static_batch is not None:
        raise click.UsageError("--dynamic-batch and --static-batch contradict each other")
    given = image_size(img_size)
    size = None if given is None else tuple(given) if isinstance(given, list) else (given, given)
    model = _load(source)
    classes = None
    with user_errors():
        if Path(source).is_file() and Path(source).suffix == ".safetensors":
            classes = class_names(read_checkpoint(source)[1], int(model.num_classes))
        if size is not None and tuple(getattr(model, "input_size", ())[-2:]) != size:
            model.set_input_size(size)
        path = export(
            model, output, fmt=fmt, static_batch=static_batch, classes=classes, opset=opset
        )
    size = path.stat().st_size / 2**20
    batch = "any batch size" if static_batch is None else f"batch {static_batch} only"
    make_console(stderr=True).print(f"wrote {path} ({size:.1f} MiB, {batch})", highlight=False)


def _batches(value: str) -> list[int]:
    try:
        return [int(b) for b in value.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@click.command("bench")
@click.argument("source")
@click.option("--batch", "batch", default="1,16", show_default=True, help="Batch sizes, e.g. 1,16.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option(
    "--runtime", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True
)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (inductor).")
@click.option("--train", is_flag=True, help="Also time a training step at the largest batch.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Interleaved repetitions.")
@click.option("--iters", type=int, default=3, show_default=True, help="Calls per repetition.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed calls first.")
@click.option("--threads", type=int, default=None, help="torch threads (default: torch's).")
@click.option(
    "--clock",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="cpu: per CPU-second of this process (for a machine shared with other jobs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG chart.")
def bench_command(
    source: str,
    batch: str,
    precision: str,
    runtime: str,
    compile_: bool,
    train: bool,
    device: str,
    repeats: int,
    iters: int,
    warmup: int,
    threads: int | None,
    clock: str,
    as_json: bool,
    plot: Path | None,
) -> None:
    """Images/s, latency, peak memory and FLOPs of SOURCE, against this machine's matmul rate.

    SOURCE is a preset, spec file or checkpoint. The matmul rate is measured at the model's
    dominant GEMM shape, interleaved with the model's own repetitions (medians, min/max).
    """
    import torch

    from vitzoo.bench.runner import BenchOptions, bench_model
    from vitzoo.bench.timing import oversubscription
    from vitzoo.errors import PerformanceWarning

    if threads:
        torch.set_num_threads(threads)
    options = BenchOptions(
        batches=_batches(batch),
        precision=precision,
        runtime=runtime,
        compile=compile_,
        train=train,
        repeats=repeats,
        iters=iters,
        warmup=warmup,
        device=device,
        clock=clock,
    )
    model = _load(source)
    with user_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore", PerformanceWarning)  # the report's "notes" say it
        report = bench_model(model, options, label=source)
    busy = oversubscription(report["threads"], what="these timings") if device == "cpu" else None
    for note in [*report["notes"], *([busy] if busy else [])]:
        make_console(stderr=True).print(f"warning: {note}", highlight=False, markup=False)
    if plot is not None:
        from vitzoo.bench.plot import plot_report

        plot_report(report, plot)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    console = make_console()
    matmul = report["matmul"]
    rate = (
        f"{matmul['gflops_per_s']['median']:.1f} GFLOP/s at {matmul['shape']}" if matmul else "n/a"
    )
    bf16 = report.get("cpu_bf16")
    native = (
        ""
        if not bf16
        else {True: ", native bf16", False: ", no native bf16"}.get(bf16["native"], "")
    )
    console.print(
        f"{report['model']} ({report['architecture']}, {report['params']:,} params) on "
        f"{report['device_name']}{native}, {plural(report['threads'], 'thread')}, "
        f"{report['precision']}, "
        f"{report['runtime']}{', compiled' if report['compile'] else ''}; matmul rate {rate}",
        highlight=False,
    )
    unit = "img/CPU-s" if report["clock"] == "cpu" else "img/s"
    table = Table(title=f"median of {report['repeats']} interleaved repetitions [min-max]")
    for column in (
        "mode",
        "batch",
        unit,
        "latency p50 / p90 ms",
        "peak MiB",
        "GFLOP/img",
        "GFLOP/s",
        "of matmul rate",
    ):
        table.add_column(column, justify="right")
    for r in report["results"]:
        ips = r["images_per_s"]
        frac = r["matmul_fraction"]
        table.add_row(
            r["mode"],
            str(r["batch"]),
            f"{ips['median']:.1f} [{ips['min']:.1f}-{ips['max']:.1f}]",
            f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p90']:.1f}",
            "n/a" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.0f}",
            f"{r['flops_per_image'] / 1e9:.3f}",
            f"{r['achieved_gflops_per_s']:.1f}",
            "n/a" if frac is None else f"{frac:.0%}",
        )
    console.print(table)


COMMANDS = [export_command, bench_command]
