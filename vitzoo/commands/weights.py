"""CLI: ``vitzoo convert SOURCE -o model.safetensors`` (the work is in :mod:`vitzoo.weights`).

Writes a self-describing vitzoo checkpoint: weights, spec and the preprocessing the source
declares. Bad input (unreadable or unsafe files, another family's checkpoint, shape mismatches,
a hub name missing offline) is one line on stderr and exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from vitzoo.commands.common import parse_sets, set_option
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


COMMANDS = [convert]
