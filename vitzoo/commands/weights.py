"""CLI: ``vitzoo convert SOURCE -o model.safetensors`` and ``vitzoo weights PRESET[.TAG]``
(the work is in :mod:`vitzoo.weights`).

Writes a self-describing vitzoo checkpoint: weights, spec and the preprocessing the source
declares. Bad input (unreadable or unsafe files, another family's checkpoint, shape mismatches,
a hub name missing offline) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vitzoo.commands.common import out, parse_sets, set_option
from vitzoo.commands.errors import fail_plainly
from vitzoo.formats import WEIGHT_FORMATS


def weights_errors() -> tuple[type[BaseException], ...]:
    from vitzoo.checkpoint import CheckpointError
    from vitzoo.spec import SpecError

    return (CheckpointError, SpecError)


@click.command("convert")
@click.argument("source")
@click.option("--preset", "preset", default=None, help="Preset or spec file the weights fill.")
@click.option(
    "--format", "fmt", type=click.Choice(WEIGHT_FORMATS), default=None, help="Override detection."
)
@set_option("Adapt, e.g. num_classes=2.")
@click.option("--no-strict", is_flag=True, help="Load what fits and report the rest.")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The vitzoo checkpoint to write (.safetensors).",
)
def convert(
    source: str,
    preset: str | None,
    fmt: str | None,
    sets: tuple[str, ...],
    no_strict: bool,
    output: Path,
) -> None:
    """Convert SOURCE (timm/vitzoo checkpoint, Hugging Face folder, hf-hub:ORG/NAME) into a
    vitzoo checkpoint with its spec and preprocessing."""
    from vitzoo.weights.load import convert_checkpoint

    console = Console(stderr=True, soft_wrap=True)
    overrides = parse_sets(sets)
    try:
        loaded = convert_checkpoint(
            source,
            output,
            preset,
            overrides=overrides,
            format=fmt,
            strict=not no_strict,
            log=lambda line: console.print(escape(line), highlight=False),
        )
    except weights_errors() as exc:
        fail_plainly(str(exc))
    conv = loaded.conversion
    console.print(
        f"wrote {escape(str(output))}: {loaded.spec.model.type} from {loaded.source.format} "
        f"({loaded.converter}); {len(conv.tensors)} tensors loaded, {len(conv.unused)} unused by "
        f"design, {len(conv.kept_init)} kept at init",
        highlight=False,
    )


def tag_row(preset: Any, tag: Any, *, cache_state: bool = False) -> dict[str, Any]:
    """One named release as a JSON-able row (``cached``: is it in the local HF cache)."""
    from vitzoo.weights.named import NamedWeights, cached_folder

    named = NamedWeights(preset, tag)
    row = {
        "name": named.name,
        "preset": preset.name,
        "tag": tag.tag,
        "default": preset.default_weights == tag,
        "hub": tag.hub,
        "licence": tag.licence,
        "dataset": tag.dataset,
        "top1": tag.top1,
        "top1_source": tag.top1_source,
        "num_classes": tag.num_classes,
        "preprocessing": dict(tag.preprocessing),
    }
    if cache_state:
        row["cached"] = cached_folder(named) is not None
    return row


def pretrained_rows(registry: Any, pattern: str | None) -> list[dict[str, Any]]:
    """``vitzoo list --pretrained``: every tag of every preset (matching ``pattern``)."""
    from vitzoo.registry import name_matches

    return [
        tag_row(preset, tag)
        for preset in registry.entries("preset")
        for tag in preset.weights
        if pattern is None or name_matches([preset.name, *preset.aliases], pattern)
    ]


def tags_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("name", "default", "top-1", "dataset", "licence", "hub"):
        table.add_column(column, overflow="fold", justify="right" if column == "top-1" else "left")
    for row in rows:
        top1 = f"{row['top1']:.2f}" if row["top1"] is not None else "-"
        table.add_row(
            row["name"],
            "yes" if row["default"] else "",
            top1,
            row["dataset"],
            row["licence"] or "-",
            row["hub"] + (" (cached)" if row.get("cached") else ""),
        )
    return table


@click.command("weights")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--download", is_flag=True, help="Fetch the weights into the Hugging Face cache (network)."
)
@click.option(
    "--load", is_flag=True, help="Build the model with these weights (the cache when offline)."
)
def weights_command(name: str, as_json: bool, download: bool, load: bool) -> None:
    """The released weights of preset NAME (tags, data, top-1, licence, hub repository, whether
    cached), or fetch / load one release NAME=PRESET.TAG (timm's spelling works too)."""
    from vitzoo.errors import WeightsError
    from vitzoo.plugins import get_plugin_system
    from vitzoo.weights.named import default_weights, load_named, named_weights
    from vitzoo.weights.named import download as fetch

    system = get_plugin_system()
    registry = system.registry
    try:
        named = named_weights(name, registry)
        if download or load:
            named = named or default_weights(name, registry)
            if download:
                folder = fetch(named)
                out.print(f"{named.name}: {named.tag.hub} cached at {folder}", markup=False)
            if load:
                loaded = load_named(named, system=system)
                out.print(
                    f"{named.name}: {loaded.spec.model.type}, {len(loaded.conversion.tensors)} "
                    f"tensors loaded from {loaded.source.location}",
                    markup=False,
                )
            return
        if named is None and ("preset", name) not in registry:
            registry.get("preset", name)  # the did-you-mean KeyError
    except (WeightsError, KeyError) as exc:
        fail_plainly(str(exc).strip("'\""))
    preset = named.preset if named is not None else registry.get("preset", name)
    tags = [named.tag] if named is not None else list(preset.weights)
    rows = [tag_row(preset, t, cache_state=True) for t in tags]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"{preset.name}: no released weights listed", markup=False)
        return
    out.print(tags_table(rows, f"released weights of {preset.name}"))


COMMANDS = [convert, weights_command]
