"""CLI: ``vitzoo train``, ``vitzoo evaluate``, ``vitzoo predict`` (the core work is in
:mod:`vitzoo.training`; this module only parses options and prints with rich)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vitzoo.commands.common import parse_sets, set_option
from vitzoo.terminal import make_console


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _fail_with(exc: BaseException) -> None:
    """Spec and checkpoint problems go to the CLI's handler (file:line lines, exit 2)."""
    from vitzoo.checkpoint import CheckpointError
    from vitzoo.spec import SpecError

    if isinstance(exc, SpecError | CheckpointError):
        raise exc
    _fail(str(exc))


def inference_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--runtime`` and ``--precision``, shared by evaluate and predict."""
    command = click.option(
        "--precision",
        type=click.Choice(["fp32", "bf16"]),
        default="fp32",
        show_default=True,
        help="bf16: weights cast once to bfloat16 (torch runtime).",
    )(command)
    return click.option(
        "--runtime",
        type=click.Choice(["torch", "onnxruntime"]),
        default="torch",
        show_default=True,
        help="onnxruntime: export in memory and run in ONNX Runtime (a .onnx file always is).",
    )(command)


@contextmanager
def _plain_warnings(console: Console) -> Iterator[None]:
    """Show library warnings (a class list that disagrees with the outputs, skipped files)
    as one ``warning:`` line each on stderr, without Python's file:line prefix."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for item in caught:
                # Libraries' deprecation notices are for their developers, and Python hides them
                # by default; "always" above is only there so repeated vitzoo warnings show.
                if issubclass(item.category, DEPRECATIONS):
                    continue
                console.print(f"[yellow]warning:[/] {escape(str(item.message))}", highlight=False)


DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def resume_command(
    spec: str,
    data_dir: Path,
    run_dir: Path,
    epochs: int | None,
    batch_size: int | None,
    strict_data: bool,
    sets: tuple[str, ...],
) -> str:
    """The exact command line that continues an interrupted run."""
    args = ["vitzoo", "train", spec, "--data", str(data_dir), "--out", str(run_dir)]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    if strict_data:
        args.append("--strict-data")
    for item in sets:
        args += ["--set", item]
    return shlex.join([*args, "--resume"])


def _known_errors() -> tuple[type[BaseException], ...]:
    from vitzoo.checkpoint import CheckpointError
    from vitzoo.data.images import DataError
    from vitzoo.errors import DistributedError
    from vitzoo.export import ExportError
    from vitzoo.runtime import RuntimeUnavailable
    from vitzoo.spec import SpecError

    return (
        SpecError,
        CheckpointError,
        DataError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
        ExportError,
        RuntimeUnavailable,
        DistributedError,
    )


@click.command()
@click.argument("spec")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset root holding train/<class>/*.jpg and val/<class>/*.jpg.",
)
@click.option("--epochs", type=int, default=None, help="Override train.epochs.")
@click.option("--batch-size", type=int, default=None, help="Override train.batch_size (global).")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder for checkpoints and metrics (default runs/<model>).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option(
    "--strict-data", is_flag=True, help="Fail on the first unreadable image instead of skipping it."
)
@set_option("Override any spec field, e.g. --set train.lr=3e-4 --set model.depth=6.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the final metrics and per-class report as JSON."
)
def train(
    spec: str,
    data_dir: Path,
    epochs: int | None,
    batch_size: int | None,
    out: Path | None,
    resume: bool,
    strict_data: bool,
    sets: tuple[str, ...],
    as_json: bool,
) -> None:
    """Train the model described by SPEC (a YAML file or preset name) on an image folder
    (or, for a video model, a folder of clips).

    Multi-GPU / multi-process: run the same command under `torchrun --nproc_per_node=N`.
    Ctrl-C finishes the current step, saves it and prints the command that resumes it.
    """
    from vitzoo.training.trainer import TrainingInterrupted
    from vitzoo.training.trainer import train as run_training

    console = make_console(stderr=True)
    if resume and out is None:
        _fail("--resume needs --out RUN_DIR (the run to continue)")
    try:
        result = run_training(
            spec,
            data_dir,
            epochs=epochs,
            batch_size=batch_size,
            out=out,
            resume=resume,
            strict_data=strict_data,
            overrides=parse_sets(sets),
            console=console,
        )
    except TrainingInterrupted as stop:
        console.print(f"[yellow]{escape(str(stop))}[/]", highlight=False)
        if stop.saved:
            again = resume_command(
                spec, data_dir, stop.run_dir, epochs, batch_size, strict_data, sets
            )
            console.print(f"continue with:\n  {escape(again)}", highlight=False)
        sys.exit(130)
    except _known_errors() as exc:
        _fail_with(exc)
        return
    print_training_result(result, as_json, console)


def print_training_result(result: Any, as_json: bool, console: Console) -> None:
    """The final metrics: everything as JSON on stdout, or one ``done`` line on stderr."""
    final = result.final
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run_dir": str(result.run_dir),
                    "classes": result.classes,
                    "final": final,
                    "history": result.history,
                    "report": result.report,
                },
                indent=2,
            )
        )
        return
    if final:
        summary = ", ".join(
            f"{k} {final[k]:.4g}" for k in ("train_loss", "val_loss", "val_accuracy") if k in final
        )
        console.print(
            f"[green]done[/]: {summary}; checkpoint {result.run_dir / 'last.safetensors'}"
        )


def _confusion_table(report: dict[str, Any]) -> Table:
    classes = report["classes"]
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("true \\ pred")
    for name in classes:
        table.add_column(name, justify="right")
    table.add_column("accuracy", justify="right")
    for name, row, acc in zip(
        classes, report["confusion"], report["per_class_accuracy"], strict=True
    ):
        table.add_row(escape(name), *(str(v) for v in row), _pct(acc))
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _per_class_table(report: dict[str, Any]) -> Table:
    table = Table(title="per class")
    for column in ("class", "support", "precision", "recall", "f1"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for i, name in enumerate(report["classes"]):
        f1 = report["per_class_f1"][i]
        table.add_row(
            escape(name),
            str(report["support"][i]),
            _pct(report["per_class_precision"][i]),
            _pct(report["per_class_recall"][i]),
            "-" if f1 is None else f"{f1:.3f}",
        )
    return table


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Dataset root (its val/ split is used), a folder of <class>/ images or clips, "
    "or a 'path,label' CSV file.",
)
@click.option(
    "--split", default=None, help="Sub-folder of --data to score (default: the spec's val split)."
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--strict-data", is_flag=True, help="Fail on unreadable images instead of skipping them."
)
@inference_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--confusion-png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the confusion matrix to this PNG.",
)
def evaluate(
    checkpoint: Path,
    data_dir: Path,
    split: str | None,
    batch_size: int,
    device: str,
    strict_data: bool,
    runtime: str,
    precision: str,
    as_json: bool,
    confusion_png: Path | None,
) -> None:
    """Accuracy, balanced accuracy, per-class precision/recall and the confusion matrix of
    CHECKPOINT on a labelled folder."""
    from vitzoo.training.inference import evaluate as run_evaluate
    from vitzoo.training.report import plot_confusion

    try:
        with _plain_warnings(make_console(stderr=True)):
            report = run_evaluate(
                checkpoint,
                data_dir,
                split=split,
                batch_size=batch_size,
                strict=strict_data,
                device=device,
                runtime=runtime,
                precision=precision,
            )
    except _known_errors() as exc:
        _fail_with(exc)
        return
    if confusion_png is not None:
        plot_confusion(report, confusion_png, title=f"{checkpoint.name} on {report['data']}")
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = make_console()
    for path, why in report["skipped"]:
        console.print(
            f"[yellow]skipped unreadable file[/] {escape(path)}: {escape(why)}", highlight=False
        )
    console.print(
        f"{escape(report['data'])}: accuracy [bold]{report['accuracy']:.2%}[/], balanced "
        f"accuracy [bold]{report['balanced_accuracy']:.2%}[/] on {report['samples']} samples, "
        f"loss {report['loss']:.4f}",
        highlight=False,
    )
    console.print(_per_class_table(report))
    console.print(_confusion_table(report))


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--from-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Also predict the paths listed in this file, one per line.",
)
@click.option(
    "--top-k",
    "-k",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Classes to show per input (at least 1).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write one row per input to a .csv, .jsonl or .parquet file (parquet needs pyarrow).",
)
@click.option("--resume", is_flag=True, help="Skip the inputs --output already holds.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Data-loader worker processes decoding images (default: min(4, CPUs)).",
)
@click.option("--flip", is_flag=True, help="Test-time augmentation: average with the mirror image.")
@click.option("--device", default="cpu", show_default=True)
@inference_options
@click.option("--json", "as_json", is_flag=True, help="Print predictions as JSON.")
def predict(
    checkpoint: Path,
    images: tuple[Path, ...],
    from_file: Path | None,
    top_k: int,
    output: Path | None,
    resume: bool,
    overwrite: bool,
    batch_size: int,
    workers: int | None,
    flip: bool,
    device: str,
    runtime: str,
    precision: str,
    as_json: bool,
) -> None:
    """Top-k classes with probabilities for each IMAGE -- files, folders (searched recursively)
    and the paths of --from-file; clips for a video checkpoint -- using CHECKPOINT's class names.

    With --output the rows go to a file as they are computed (--resume continues an interrupted
    run, each input written once). An unreadable input gets a row with its error and the run
    goes on; the exit status is then 1 (0 when every input was read).
    """
    from vitzoo.commands.common import progress_bar, refuse_existing
    from vitzoo.training.inference import load_classifier
    from vitzoo.training.prediction import PredictOptions, collect_inputs, predict_rows
    from vitzoo.training.prediction_files import output_format

    if not images and from_file is None:
        raise click.UsageError("give images or folders, or --from-file LIST")
    if resume and output is None:
        raise click.UsageError("--resume needs --output FILE (the file to continue)")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other; pick one")
    if output is not None:
        output_format(output)  # an unknown suffix or a missing pyarrow stops before any work
        if not resume:
            refuse_existing(output, overwrite, resumable=True)
    console = make_console(stderr=True)
    try:
        with _plain_warnings(console):
            model, classes, data_cfg = load_classifier(
                checkpoint, device=device, runtime=runtime, precision=precision
            )
            paths = collect_inputs(images, from_file, clips=data_cfg.frames is not None)
            workers = min(4, os.cpu_count() or 1) if workers is None else workers
            options = PredictOptions(top_k, batch_size, workers, device, flip)
            if output is not None:
                _predict_to_file(model, classes, data_cfg, paths, options, output, resume)
                return
            with progress_bar("predicting") as tick:
                results = list(predict_rows(model, classes, data_cfg, paths, options, tick))
    except _known_errors() as exc:
        _fail_with(exc)
        return
    _print_predictions(results, as_json)
    if any(r.get("error") for r in results):
        sys.exit(1)


def _predict_to_file(
    model: Any,
    classes: list[str],
    data_cfg: Any,
    paths: list[Path],
    options: Any,
    output: Path,
    resume: bool,
) -> None:
    """Rows to ``output`` batch by batch; a summary line on stderr; exit 1 if any failed."""
    import time

    from vitzoo.commands.common import progress_bar
    from vitzoo.training.prediction import predict_rows
    from vitzoo.training.prediction_files import PredictionFile

    sink = PredictionFile(output, min(options.top_k, len(classes)), resume=resume)
    todo = [p for p in paths if str(p) not in sink.done]
    started, written, failed = time.perf_counter(), 0, 0
    complete = False
    try:
        with progress_bar(f"predicting {len(todo)} inputs") as tick:
            batch: list[dict[str, Any]] = []
            for row in predict_rows(model, classes, data_cfg, todo, options, tick):
                batch.append(row)
                failed += bool(row.get("error"))
                if len(batch) >= options.batch_size:
                    sink.write(batch)
                    written, batch = written + len(batch), []
            sink.write(batch)
            written += len(batch)
        complete = True
    finally:
        sink.close(complete=complete)
    seconds = time.perf_counter() - started
    skipped = len(paths) - len(todo)
    make_console(stderr=True).print(
        f"wrote {written} rows to {output}"
        + (f" ({skipped} already there)" if skipped else "")
        + (f", {failed} unreadable" if failed else "")
        + f"; {written / max(seconds, 1e-9):.1f} inputs/s",
        markup=False,
        highlight=False,
    )
    if failed:
        sys.exit(1)


def _print_predictions(results: list[dict[str, Any]], as_json: bool) -> None:
    results = [
        {"image": r["path"], **{k: v for k, v in r.items() if k != "path" and v is not None}}
        for r in results
    ]
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    console = make_console()
    for result in results:
        if "error" in result:
            console.print(
                f"[red]{escape(result['image'])}[/]: {escape(result['error'])}", highlight=False
            )
            continue
        console.print(f"[bold]{escape(result['image'])}[/]", highlight=False)
        table = Table()
        table.add_column("class")
        table.add_column("probability", justify="right")
        for entry in result["top"]:
            table.add_row(escape(entry["class"]), f"{entry['probability']:.2%}")
        console.print(table)


COMMANDS = [train, evaluate, predict]
