"""CLI: ``vitzoo train``, ``vitzoo evaluate``, ``vitzoo predict`` (the core work is in
:mod:`vitzoo.training`; this module only parses options and prints with rich)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vitzoo.commands.common import (
    image_size,
    inference_options,
    parse_sets,
    plain_warnings,
    set_option,
)
from vitzoo.commands.errors import (
    EXIT_INTERRUPTED,
    fail_plainly,
    say_partial,
    user_errors,
)
from vitzoo.terminal import make_console


def resume_command(
    spec: str,
    data_dir: Path,
    run_dir: Path,
    epochs: int | None,
    batch_size: int | None,
    strict_data: bool,
    sets: tuple[str, ...],
    shortcuts: tuple[str, ...] = (),
) -> str:
    """The exact command line that continues an interrupted run (``shortcuts``: the
    ``--lr 1e-4``-style options as given, flag and value alternating)."""
    args = ["vitzoo", "train", spec, "--data", str(data_dir), "--out", str(run_dir)]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    args += list(shortcuts)
    if strict_data:
        args.append("--strict-data")
    for item in sets:
        args += ["--set", item]
    return shlex.join([*args, "--resume"])


#: ``vitzoo train`` options that are shortcuts for one spec field each (timm's names):
#: option name -> (spec path, flag). They go through the same override path as ``--set``, and
#: a bad value is reported at the flag (``--lr -1  train.lr: must be greater than 0``).
SHORTCUTS = {
    "lr": ("train.lr", "--lr"),
    "device": ("train.device", "--device"),
    "workers": ("data.num_workers", "--workers"),
    "num_classes": ("model.num_classes", "--num-classes"),
    "img_size": ("model.image_size", "--img-size"),
}


def shortcut_overrides(
    given: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str], tuple[str, ...]]:
    """(overrides, where each came from, the flags as typed) for the shortcut options given."""
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    typed: list[str] = []
    for name, raw in given.items():
        if raw is None:
            continue
        path, flag = SHORTCUTS[name]
        value = image_size(raw) if name == "img_size" else raw
        overrides[path] = value
        sources[path] = f"{flag} {raw}"
        typed += [flag, str(raw)]
    return overrides, sources, tuple(typed)


def shortcut_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--lr``, ``--device``, ``--workers``, ``--num-classes``, ``--img-size``."""
    for option in reversed(
        [
            click.option("--lr", type=float, default=None, help="Override train.lr (peak)."),
            click.option(
                "--device", default=None, help="Override train.device: auto, cpu, cuda, cuda:1."
            ),
            click.option(
                "--workers",
                type=int,
                default=None,
                help="Override data.num_workers (data loading processes; 0: in this one).",
            ),
            click.option(
                "--num-classes",
                type=int,
                default=None,
                help="Override model.num_classes (the data's class count decides in the end).",
            ),
            click.option(
                "--img-size",
                default=None,
                metavar="N|H,W",
                help="Override model.image_size (learned positions resample when fine-tuning).",
            ),
        ]
    ):
        command = option(command)
    return command


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
@shortcut_options
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
    lr: float | None,
    device: str | None,
    workers: int | None,
    num_classes: int | None,
    img_size: str | None,
    sets: tuple[str, ...],
    as_json: bool,
) -> None:
    """Train the model described by SPEC (a YAML file, a preset name, or weights to fine-tune:
    a vitzoo checkpoint, a Hugging Face folder, hf-hub:ORG/NAME) on an image folder (or, for a
    video model, a folder of clips).

    Multi-GPU / multi-process: run the same command under `torchrun --nproc_per_node=N`.
    Ctrl-C finishes the current step, saves it and prints the command that resumes it.
    """
    from vitzoo.training.trainer import TrainingInterrupted
    from vitzoo.training.trainer import train as run_training

    console = make_console(stderr=True)
    if resume and out is None:
        fail_plainly("--resume needs --out RUN_DIR (the run to continue)")
    given = {"lr": lr, "device": device, "workers": workers, "num_classes": num_classes}
    shortcuts, labels, typed = shortcut_overrides({**given, "img_size": img_size})
    try:
        with user_errors(FloatingPointError):  # a diverging loss: the message says what to change
            result = run_training(
                spec,
                data_dir,
                epochs=epochs,
                batch_size=batch_size,
                out=out,
                resume=resume,
                strict_data=strict_data,
                overrides={**shortcuts, **parse_sets(sets)},
                sources=labels,
                console=console,
            )
    except TrainingInterrupted as stop:
        console.print(f"[yellow]{escape(str(stop))}[/]", highlight=False)
        if stop.saved:
            again = resume_command(
                spec, data_dir, stop.run_dir, epochs, batch_size, strict_data, sets, typed
            )
            console.print(f"continue with:\n  {escape(again)}", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    print_training_result(result, as_json, console)


def print_training_result(result: Any, as_json: bool, console: Console) -> None:
    """The final metrics: everything as JSON on stdout, or one ``done`` line on stderr; by
    rank 0 alone under torchrun (every rank returns the same result)."""
    if not getattr(result, "is_main", True):
        return
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
    """Accuracy, top-5 accuracy (more than 5 classes), balanced accuracy, per-class
    precision/recall and the confusion matrix of CHECKPOINT on a labelled folder."""
    from vitzoo.training.inference import evaluate as run_evaluate
    from vitzoo.training.report import plot_confusion

    with user_errors(), plain_warnings(make_console(stderr=True)):
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
    if confusion_png is not None:
        plot_confusion(report, confusion_png, title=f"{checkpoint.name} on {report['data']}")
    errors = make_console(stderr=True)
    for path, why in report["skipped"]:
        errors.print(
            f"[yellow]skipped unreadable file[/] {escape(path)}: {escape(why)}", highlight=False
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_evaluation(report)
    if report["skipped"]:
        say_partial(len(report["skipped"]), report["samples"] + len(report["skipped"]), "files")


def _print_evaluation(report: dict[str, Any]) -> None:
    """The report as a person reads it: the headline, per-class table, confusion matrix."""
    console = make_console()
    top5 = report.get("top5_accuracy")
    top5 = "" if top5 is None else f", top-5 accuracy [bold]{top5:.2%}[/]"
    console.print(
        f"{escape(report['data'])}: accuracy [bold]{report['accuracy']:.2%}[/]{top5}, balanced "
        f"accuracy [bold]{report['balanced_accuracy']:.2%}[/] on {report['samples']} samples, "
        f"loss {report['loss']:.4f}",
        highlight=False,
    )
    console.print(_per_class_table(report))
    console.print(_confusion_table(report))


COMMANDS = [train, evaluate]
