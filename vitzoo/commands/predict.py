"""``vitzoo predict CKPT PATH...``: top-k classes for files, folders and lists of paths.

Batched through a data loader with workers (:mod:`vitzoo.training.prediction`), with a progress
bar; ``--output`` writes one row per input to CSV / JSON lines / Parquet as the batches finish,
and ``--resume`` continues an interrupted run, each input written exactly once
(:mod:`vitzoo.training.prediction_files`). Unreadable inputs get a row with their error and
the run goes on; the exit status follows the house rule (README): 3 when the results are
partial, 2 when no input could be read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from vitzoo.commands.common import (
    inference_options,
    plain_warnings,
    progress_bar,
)
from vitzoo.commands.errors import EXIT_INPUT, refuse_existing, say_partial, user_errors
from vitzoo.terminal import make_console


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
    run, each input written once). An unreadable input gets a row with its error (listed on
    stderr) and the run goes on; the exit status is then 3 (results partial), or 2 when no
    input could be read.
    """
    from vitzoo.training.inference import load_classifier
    from vitzoo.training.prediction import PredictOptions, collect_inputs, predict_rows
    from vitzoo.training.prediction_files import output_format, partial_stream

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
            refuse_existing(partial_stream(output), overwrite, resumable=True)
    console = make_console(stderr=True)
    with user_errors(), plain_warnings(console):
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
    _print_predictions(results, as_json)
    _exit_for_failures(sum(bool(r.get("error")) for r in results), len(results))


def _exit_for_failures(failed: int, total: int, listed: str = "listed above") -> None:
    """The house rule: all unreadable is bad input (2); some unreadable, partial results (3)."""
    if failed and failed == total:
        make_console(stderr=True).print("error: no input could be read", highlight=False)
        raise SystemExit(EXIT_INPUT)
    if failed:
        say_partial(failed, total, listed=listed)


def _predict_to_file(
    model: Any,
    classes: list[str],
    data_cfg: Any,
    paths: list[Path],
    options: Any,
    output: Path,
    resume: bool,
) -> None:
    """Rows to ``output`` batch by batch; a summary line on stderr; the exit rule for failures."""
    from vitzoo.training.prediction import predict_rows
    from vitzoo.training.prediction_files import PredictionFile, path_key

    sink = PredictionFile(output, min(options.top_k, len(classes)), resume=resume)
    todo = [p for p in paths if path_key(p) not in sink.done]
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
    _exit_for_failures(failed, len(todo), listed=f"their rows in {output} say why")


def _print_predictions(results: list[dict[str, Any]], as_json: bool) -> None:
    results = [
        {"image": r["path"], **{k: v for k, v in r.items() if k != "path" and v is not None}}
        for r in results
    ]
    errors = make_console(stderr=True)
    for result in results:  # unreadable inputs: stderr, whatever the output format
        if "error" in result:
            image, error = result["image"], result["error"]
            said = error if image in error else f"{image}: {error}"  # the path once
            errors.print(f"[red]{escape(said)}[/]", highlight=False)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    console = make_console()
    for result in results:
        if "error" in result:
            continue
        console.print(f"[bold]{escape(result['image'])}[/]", highlight=False)
        table = Table()
        table.add_column("class")
        table.add_column("probability", justify="right")
        for entry in result["top"]:
            table.add_row(escape(entry["class"]), f"{entry['probability']:.2%}")
        console.print(table)


COMMANDS = [predict]
