"""CLI: ``vitzoo train``, ``vitzoo evaluate``, ``vitzoo predict`` (the core work is in
:mod:`vitzoo.training`; this module only parses options and prints with rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _fail_with(exc: BaseException) -> None:
    """Spec and checkpoint problems go to the CLI's handler (file:line lines, exit 2)."""
    from vitzoo.checkpoint import CheckpointError
    from vitzoo.spec import SpecError

    if isinstance(exc, SpecError | CheckpointError):
        raise exc
    _fail(str(exc))


def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    """``--set train.lr=3e-4`` -> ``{"train.lr": 0.0003}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _known_errors() -> tuple[type[BaseException], ...]:
    from vitzoo.checkpoint import CheckpointError
    from vitzoo.spec import SpecError
    from vitzoo.training.data import DataError

    return (SpecError, CheckpointError, DataError, FileExistsError, FileNotFoundError, ValueError)


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
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any spec field, e.g. --set train.lr=3e-4 --set model.depth=6.",
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
) -> None:
    """Train the model described by SPEC (a YAML file or preset name) on an image folder.

    Multi-GPU / multi-process: run the same command under `torchrun --nproc_per_node=N`.
    """
    from vitzoo.training.trainer import train as run_training

    console = Console(stderr=True)
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
            overrides=_parse_sets(sets),
            console=console,
        )
    except _known_errors() as exc:
        _fail_with(exc)
        return
    final = result.final
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
        table.add_row(name, *(str(v) for v in row), "-" if acc is None else f"{acc:.2%}")
    return table


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset root (its val/ split is used) or a folder of <class>/ images.",
)
@click.option(
    "--split", default=None, help="Sub-folder of --data to score (default: the spec's val split)."
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--strict-data", is_flag=True, help="Fail on unreadable images instead of skipping them."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate(
    checkpoint: Path,
    data_dir: Path,
    split: str | None,
    batch_size: int,
    device: str,
    strict_data: bool,
    as_json: bool,
) -> None:
    """Accuracy, per-class accuracy and confusion matrix of CHECKPOINT on a labelled folder."""
    from vitzoo.training.inference import evaluate as run_evaluate

    try:
        report = run_evaluate(
            checkpoint,
            data_dir,
            split=split,
            batch_size=batch_size,
            strict=strict_data,
            device=device,
        )
    except _known_errors() as exc:
        _fail_with(exc)
        return
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = Console()
    for path, why in report["skipped"]:
        console.print(
            f"[yellow]skipped unreadable image[/] {escape(path)}: {escape(why)}", highlight=False
        )
    console.print(
        f"{escape(report['data'])}: accuracy [bold]{report['accuracy']:.2%}[/] on {report['samples']} "
        f"images, loss {report['loss']:.4f}"
    )
    console.print(_confusion_table(report))


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top-k", "-k", type=int, default=5, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print predictions as JSON.")
def predict(
    checkpoint: Path, images: tuple[Path, ...], top_k: int, device: str, as_json: bool
) -> None:
    """Top-k classes with probabilities for each IMAGE, using CHECKPOINT's class names."""
    from vitzoo.training.inference import predict as run_predict

    try:
        results = run_predict(checkpoint, images, top_k=top_k, device=device)
    except _known_errors() as exc:
        _fail_with(exc)
        return
    failed = any("error" in r for r in results)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        console = Console()
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
                table.add_row(entry["class"], f"{entry['probability']:.2%}")
            console.print(table)
    if failed:
        sys.exit(1)


COMMANDS = [train, evaluate, predict]
