"""``vitzoo build SOURCE``: validate, build and summarise a model (parameters, GMACs, shapes,
module tree), optionally from pretrained weights and into a checkpoint.

A spec is resolved once (:func:`vitzoo.builder.resolve` with ``macs=True``): its trial build on
the meta device already counts parameters, MACs and what an objective adds, so the summary needs
no second build. ``vitzoo.builder`` (torch) is imported inside the functions, so ``vitzoo --help``
stays quick, and ``resolve`` is looked up at call time (tests count the calls).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.tree import Tree

from vitzoo.commands.common import err, human_count, out, parse_sets, set_option
from vitzoo.commands.errors import fail_plainly, fail_with_spec_error
from vitzoo.errors import CheckpointError, SpecError
from vitzoo.formats import WEIGHT_FORMATS


def module_tree(model: Any, depth: int = 2) -> Tree:
    """The first ``depth`` levels of submodules with their parameter counts (12 per level)."""

    def count(m: Any) -> str:
        return human_count(sum(p.numel() for p in m.parameters()))

    tree = Tree(f"{type(model).__name__} ({count(model)})")

    def add(node: Tree, module: Any, level: int) -> None:
        children = list(module.named_children())
        for name, child in children[:12]:
            sub = node.add(f"{name}: {type(child).__name__} ({count(child)})")
            if level < depth:
                add(sub, child, level + 1)
        if len(children) > 12:
            node.add(f"... {len(children) - 12} more")

    add(tree, model, 1)
    return tree


def summarise(model: Any, forward: bool) -> dict[str, Any]:
    """Counts and sizes of a built model; with ``forward``, the shapes of one trial forward."""
    import torch

    info: dict[str, Any] = {
        "architecture": model.vitzoo_spec.model.type,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "num_features": getattr(model, "num_features", None),
        "num_classes": getattr(model, "num_classes", None),
        "input_shape": [1, *getattr(model, "input_size", ())],
    }
    if forward and getattr(model, "input_size", None):
        model.eval()
        with torch.no_grad():
            x = model.example_input(1)
            features = model.forward_features(x)
            logits = model.forward_head(features)
        info["features_shape"] = list(features.shape)
        info["output_shape"] = list(logits.shape)
        if features.ndim == 3:
            info["tokens"] = features.shape[1]
            info["prefix_tokens"] = getattr(model, "num_prefix_tokens", 0)
    return info


def build_model(
    source: str, sets: tuple[str, ...], weights: str | None, weights_format: str | None
) -> tuple[Any, dict[str, str], Any]:
    """The model, the metadata its checkpoint should carry, and the trial report (None when
    the spec came with the weights: the caller resolves that spec, once)."""
    import vitzoo.builder
    from vitzoo.plugins import get_plugin_system
    from vitzoo.spec import assignment_sources
    from vitzoo.weights.load import load_pretrained
    from vitzoo.weights.named import load_named, named_weights
    from vitzoo.weights.sources import is_weights_source

    named = None if weights is not None else named_weights(source, get_plugin_system().registry)
    if named is not None:  # a released tag: vit-s16.augreg-in21k-ft-in1k
        log = lambda line: err.print(line, markup=False, highlight=False)  # noqa: E731
        loaded = load_named(named, parse_sets(sets), log=log, macs=True)
        return loaded.model, loaded.metadata(), loaded.report
    if weights is not None or is_weights_source(source):
        loaded = load_pretrained(
            weights or source,
            None if source == "-" or weights is None else source,
            overrides=parse_sets(sets),
            format=weights_format,
            log=lambda line: err.print(line, markup=False, highlight=False),
            macs=True,  # the summary's MACs from the load's own trial build
        )
        return loaded.model, loaded.metadata(), loaded.report
    resolved = vitzoo.builder.resolve(
        source, parse_sets(sets), sources=assignment_sources(sets), macs=True
    )
    spec, report = resolved.spec, resolved.report
    section = getattr(spec, "weights", None)
    if section is None:
        return vitzoo.builder.build_from_spec(spec), {}, report
    loaded = load_pretrained(section.source, spec, format=section.format, strict=section.strict)
    return loaded.model, loaded.metadata(), report


def add_report(info: dict[str, Any], spec: Any, report: Any) -> None:
    """MACs and an objective's trainable parameters, from the trial build's report."""
    macs = None if report is None or report.macs is None else int(report.macs)
    info["macs"] = macs
    info["gmacs"] = None if macs is None else round(macs / 1e9, 3)
    if getattr(spec, "objective", None) is not None and report is not None:
        if report.objective_trainable is not None:
            info["objective"] = spec.objective.type
            info["objective_trainable_params"] = report.objective_trainable


def summary_table(title: str, info: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    from vitzoo.flops import format_macs

    for key, value in info.items():
        if key == "gmacs":
            continue  # the JSON's number; the table shows "macs" in the unit that fits
        shown = f"{human_count(value)} ({value:,})" if key.endswith("params") else str(value)
        if key == "macs":
            key, shown = "MACs", f"{format_macs(value)} (multiply-accumulates)"
        table.add_row(key, shown)
    return table


@click.command("build")
@click.argument("source")
@set_option("Override a field, e.g. model.num_classes=10.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a checkpoint (.safetensors).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@click.option("--no-forward", is_flag=True, help="Skip the trial forward pass (shapes).")
@click.option(
    "--weights",
    default=None,
    help="Start from pretrained weights: vitzoo/timm checkpoint, HF folder, hf-hub:ORG/NAME.",
)
@click.option(
    "--format",
    "weights_format",
    type=click.Choice(WEIGHT_FORMATS),
    default=None,
    help="Override the detected --weights format.",
)
def build_command(
    source: str,
    sets: tuple[str, ...],
    output: Path | None,
    as_json: bool,
    no_forward: bool,
    weights: str | None,
    weights_format: str | None,
) -> None:
    """Validate SOURCE (a spec file, a preset name or alias such as a timm model name), build it
    and print a summary: parameters, GMACs at its input size, shapes, module tree.

    SOURCE may also be weights with a spec of their own (a vitzoo checkpoint, a Hugging Face
    folder, hf-hub:ORG/NAME); with --weights, SOURCE may be "-" to use the weights' own spec;
    PRESET.TAG (`vitzoo list --pretrained`) builds a preset with its released weights.
    """
    import vitzoo.builder
    from vitzoo.checkpoint import save

    try:
        model, metadata, report = build_model(source, sets, weights, weights_format)
    except SpecError as exc:
        fail_with_spec_error(exc)
    except CheckpointError as exc:
        fail_plainly(str(exc))
    info = summarise(model, forward=not no_forward)
    built_spec = model.vitzoo_spec  # also when the spec came with the weights
    if report is None:  # a spec object the load did not resolve itself (no real build)
        report = vitzoo.builder.resolve(built_spec, macs=True).report
    add_report(info, built_spec, report)
    if output is not None:
        save(model, output, metadata=metadata)
        info["checkpoint"] = str(output)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    out.print(summary_table(f"{source}", info))
    out.print(module_tree(model))


COMMANDS = [build_command]
