"""CLI: ``vitzoo embed`` and ``vitzoo probe`` (the work is in :mod:`vitzoo.training.embeddings`,
:mod:`vitzoo.training.probes` and :mod:`vitzoo.training.probe`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vitzoo.commands.common import err, image_size, out, progress_bar
from vitzoo.commands.errors import refuse_existing, say_partial


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """SOURCE, --data, --features, batching and device: shared by embed and probe."""
    for option in reversed(
        [
            click.argument("source"),
            click.option(
                "--data",
                "data_dir",
                required=True,
                type=click.Path(file_okay=False, path_type=Path),
                help="DIR/train/<class>/* (and DIR/val/<class>/*), or DIR/<class>/*.",
            ),
            click.option(
                "--pretrained",
                is_flag=True,
                help="SOURCE is a preset: take its default released weights.",
            ),
            click.option(
                "--features",
                type=click.Choice(["auto", "model", "cls", "mean", "cls-mean"]),
                default="auto",
                show_default=True,
                help="auto: the release's recommendation (DINOv2: cls-mean), else model; model: "
                "the model's own pooling (what its released head reads); cls / mean: class "
                "token / patch mean; cls-mean: both (probe: where the model can pool so).",
            ),
            click.option(
                "--img-size",
                default=None,
                help="Run the backbone at this input size (N or H,W): its positions are "
                "resampled the backbone's own way (e.g. DINOv2's 518-px table at 224).",
            ),
            click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
            click.option(
                "--workers",
                type=click.IntRange(min=0),
                default=None,
                help="Data-loader worker processes (default: min(4, CPUs)).",
            ),
            click.option("--device", default="cpu", show_default=True),
            click.option(
                "--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path)
            ),
            click.option("--overwrite", is_flag=True, help="Replace an existing output file."),
        ]
    ):
        command = option(command)
    return command


def _say_skipped(result: Any) -> int:
    """Each unreadable image on stderr; returns how many there were."""
    skipped = [entry for split in result.splits.values() for entry in split.skipped]
    for path, why in skipped:
        err.print(f"skipped unreadable image {path}: {why}", markup=False, highlight=False)
    return len(skipped)


def _end(result: Any) -> None:
    """The house exit rule: some images unreadable means partial results (exit status 3)."""
    skipped = _say_skipped(result)
    if skipped:
        total = skipped + sum(len(s.labels) for s in result.splits.values())
        say_partial(skipped, total, "images")


def _embed(
    source: str,
    model: Any,
    data_dir: Path,
    features: str,
    batch_size: int,
    workers: int | None,
    device: str,
) -> tuple[Any, Any]:
    from vitzoo.training.embeddings import embed_folder

    with progress_bar(f"embedding {data_dir}") as tick:
        return embed_folder(
            model,
            data_dir,
            features=features,
            source=source,
            batch_size=batch_size,
            num_workers=_default_workers() if workers is None else workers,
            device=device,
            progress=tick,
        )


@click.command("embed")
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def embed_command(
    source: str,
    data_dir: Path,
    pretrained: bool,
    features: str,
    img_size: str | None,
    batch_size: int,
    workers: int | None,
    device: str,
    output: Path,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Features of every image of --data under SOURCE (checkpoint, preset, PRESET.TAG, spec),
    written atomically to one safetensors file (per split: features, labels, file paths)."""
    from vitzoo.training.embeddings import describe, load_backbone

    refuse_existing(output, overwrite)
    model = load_backbone(source, pretrained=pretrained, image_size=image_size(img_size))
    result, _ = _embed(source, model, data_dir, features, batch_size, workers, device)
    result.save(output)
    summary = {**describe(result), "output": str(output)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        _end(result)
        return
    shapes = ", ".join(f"{n} {s[0]} x {s[1]}" for n, s in summary["splits"].items())
    err.print(f"wrote {output}: {shapes} ({summary['seconds']:.1f}s)", markup=False)
    _end(result)


@click.command("probe")
@source_options
@click.option(
    "--embeddings",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Reuse a file written by `vitzoo embed` (same SOURCE and --features) instead of "
    "embedding again.",
)
@click.option("--k", "k", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.07)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def probe_command(
    source: str,
    data_dir: Path,
    pretrained: bool,
    features: str,
    img_size: str | None,
    batch_size: int,
    workers: int | None,
    device: str,
    output: Path,
    overwrite: bool,
    embeddings: Path | None,
    k: int,
    temperature: float,
    as_json: bool,
) -> None:
    """Fit a linear probe (logistic regression, regularisation chosen on the validation split)
    on SOURCE's frozen features of --data, score a k-NN beside it, and write the backbone with
    the fitted head as a normal checkpoint (predict / evaluate / export take it)."""
    from vitzoo.errors import InputError
    from vitzoo.training import embeddings as emb
    from vitzoo.training.probe import fit, save_probe

    refuse_existing(output, overwrite)
    backbone = emb.load_backbone(source, pretrained=pretrained, image_size=image_size(img_size))
    features = emb.resolve_features(backbone, features)
    model = emb.feature_model(backbone, features)
    emb.probe_ready(model, features)
    if embeddings is not None:
        embedded = emb.EmbeddingSet.load(embeddings)
        embedded.check_backbone(backbone, embeddings)
        if embedded.features != features:
            raise InputError(
                f"{embeddings} holds --features {embedded.features} embeddings, not {features}"
            )
    else:
        embedded, model = _embed(source, model, data_dir, features, batch_size, workers, device)
    classifier, report = fit(embedded, k=k, temperature=temperature)
    save_probe(model, classifier, report, output)
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "output": str(output)}, indent=2))
        _end(embedded)
        return
    seconds = report.seconds
    where = "held-out fifth of train" if report.held_out else "val"
    out.print(
        f"linear probe on {report.features} features: {report.val_accuracy:.2%} on {where} "
        f"({report.samples['val']} images; "
        f"l2 {report.l2:g}, train {report.train_accuracy:.2%}); k-NN (k={report.k}, "
        f"T={report.temperature:g}): {report.knn_accuracy:.2%}\n"
        f"embedding {seconds['embed']:.1f}s, fitting {seconds['linear']:.2f}s; wrote {output}",
        markup=False,
    )
    _end(embedded)


COMMANDS = [embed_command, probe_command]
