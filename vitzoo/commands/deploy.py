"""CLI: ``vitzoo export`` (ONNX / torch.export) and ``vitzoo bench`` (speed against the roofline).

The work is in :mod:`vitzoo.export` and :mod:`vitzoo.bench`; this module parses options and
prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table


def _load(source: str) -> Any:
    """A checkpoint, spec file or preset, with plain errors (never a traceback)."""
    from vitzoo.checkpoint import CheckpointError
    from vitzoo.commands.inspect import load_model
    from vitzoo.spec import SpecError

    try:
        return load_model(source)
    except (SpecError, CheckpointError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


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
def export_command(
    source: str, output: Path, fmt: str | None, static_batch: int | None, dynamic_batch: bool
) -> None:
    """Export SOURCE (a checkpoint, spec file or preset) for deployment.

    The graph takes any batch size (one image or many) unless --static-batch N fixes it. The
    file carries the spec, input size and class names (from a checkpoint written by
    `vitzoo train`), so `vitzoo predict --runtime onnxruntime model.onnx` needs nothing else.
    """
    from vitzoo.checkpoint import read_checkpoint
    from vitzoo.export import ExportError, export
    from vitzoo.training.state import class_names

    if dynamic_batch and static_batch is not None:
        raise click.UsageError("--dynamic-batch and --static-batch contradict each other")
    model = _load(source)
    classes = None
    if Path(source).is_file() and Path(source).suffix == ".safetensors":
        classes = class_names(read_checkpoint(source)[1], int(model.num_classes))
    try:
        path = export(model, output, fmt=fmt, static_batch=static_batch, classes=classes)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    size = path.stat().st_size / 2**20
    batch = "any batch size" if static_batch is None else f"batch {static_batch} only"
    Console(stderr=True).print(f"wrote {path} ({size:.1f} MiB, {batch})", highlight=False)


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

    from vitzoo.bench.runner import BenchError, BenchOptions, bench_model
    from vitzoo.runtime import RuntimeUnavailable

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
    try:
        report = bench_model(model, options, label=source)
    except (BenchError, RuntimeUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    if plot is not None:
        from vitzoo.bench.plot import plot_report

        plot_report(report, plot)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    console = Console()
    matmul = report["matmul"]
    rate = (
        f"{matmul['gflops_per_s']['median']:.1f} GFLOP/s at {matmul['shape']}" if matmul else "n/a"
    )
    console.print(
        f"{report['model']} ({report['architecture']}, {report['params']:,} params) on "
        f"{report['device_name']}, {report['threads']} threads, {report['precision']}, "
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
