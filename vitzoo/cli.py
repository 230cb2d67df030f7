"""The ``vitzoo`` command line: list, build, plugins, schema, check (+ plugin commands).

Errors the user can fix (bad specs, bad checkpoints) are printed as ``file:line:col  path: message``
lines on stderr with exit status 2, never as a traceback. Anything else that goes wrong inside a
command prints one line and "run with --debug for the traceback", exit status 1
(:class:`VitzooGroup`); ``--debug`` (or ``VITZOO_DEBUG=1``) lets the exception through.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from vitzoo.commands.common import fail_plainly, parse_sets, set_option
from vitzoo.formats import WEIGHT_FORMATS
from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.registry import KINDS, PresetEntry, name_matches
from vitzoo.suggest import did_you_mean
from vitzoo.terminal import make_console, plural

#: Modules under vitzoo/commands that contribute sub-commands (each exposes ``COMMANDS``).
COMMAND_MODULES = (
    "vitzoo.commands.train",
    "vitzoo.commands.inspect",
    "vitzoo.commands.weights",
    "vitzoo.commands.deploy",
)

out: Console = make_console()
err: Console = make_console(stderr=True)


def fail_with_spec_error(exc: Exception) -> None:
    """Print every issue of a SpecError / CheckpointError and exit with status 2."""
    for line in str(exc).splitlines():
        err.print(line, markup=False, highlight=False)
    sys.exit(2)


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _debugging(ctx: click.Context | None) -> bool:
    root = ctx.find_root() if ctx is not None else None
    flag = bool(root.params.get("debug")) if root is not None else False
    return flag or os.environ.get("VITZOO_DEBUG", "").strip().lower() in {"1", "true", "yes"}


def report_error(exc: Exception, ctx: click.Context | None = None) -> None:
    """Plain lines for errors the user can fix (exit 2); one line for the rest (exit 1)."""
    from vitzoo.checkpoint import CheckpointError
    from vitzoo.plugins import PluginLoadError
    from vitzoo.spec import SpecError

    if isinstance(exc, SpecError | CheckpointError):
        fail_with_spec_error(exc)
    if isinstance(exc, PluginLoadError | LookupError) and not isinstance(exc, KeyError):
        err.print(f"vitzoo: {exc}", markup=False, highlight=False)
        sys.exit(2)
    if _debugging(ctx):
        raise exc
    message = " ".join(str(exc).split()) or "(no message)"
    err.print(
        f"vitzoo: internal error: {type(exc).__name__}: {message}", markup=False, highlight=False
    )
    err.print("run with --debug for the traceback", markup=False, highlight=False)
    sys.exit(1)


class VitzooGroup(click.Group):
    """The root group: no command ends in a traceback unless ``--debug`` asks for one."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every command's errors meet
            report_error(exc, ctx)


@click.group(cls=VitzooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vitzoo")
@click.option(
    "--debug", is_flag=True, help="Show the full traceback of unexpected errors (VITZOO_DEBUG=1)."
)
def cli(debug: bool) -> None:
    """vitzoo: a plugin-based model zoo for Vision Transformers."""


# -- list ---------------------------------------------------------------------------------
def preset_gmacs(name: str) -> str:
    """The preset's GMACs at its input size (counted on meta), or '?' when it cannot run there."""
    from vitzoo.flops import format_gmacs, preset_macs

    try:
        return format_gmacs(preset_macs(name))
    except Exception:  # a preset that cannot run on meta must not break the listing
        return "?"


def list_aliases(pattern: str | None, as_json: bool) -> None:
    registry = get_plugin_system().registry
    rows = [
        {"alias": alias, "preset": name, "plugin": registry.get("preset", name).plugin}
        for alias, name in registry.aliases().items()
        if pattern is None or name_matches([alias, name], pattern)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="vitzoo preset aliases")
    for column in ("alias", "preset", "plugin"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["alias"], row["preset"], row["plugin"])
    out.print(table)


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind.")
@click.option("--aliases", "show_aliases", is_flag=True, help="Preset aliases (e.g. timm names).")
@click.option(
    "--macs",
    "with_macs",
    is_flag=True,
    help="Presets: add a GMACs column (counted on the meta device; takes a while).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(
    pattern: str | None, kind: str | None, show_aliases: bool, with_macs: bool, as_json: bool
) -> None:
    """Every registered component, architecture, objective and preset, and its plugin.

    PATTERN filters names (and preset aliases) with shell-style wildcards, quoted:
    vitzoo list 'cait-*'; a word without wildcards matches every name containing it.
    """
    if show_aliases:
        list_aliases(pattern, as_json)
        return
    if with_macs and kind is None:
        kind = "preset"  # only presets have an input size to count at
    registry = get_plugin_system().registry
    rows = []
    for entry in registry.entries(kind) if pattern is None else registry.find(pattern, kind):
        row = {
            "kind": entry.kind,
            "name": entry.name,
            "plugin": entry.plugin,
            "summary": entry.summary,
        }
        if isinstance(entry, PresetEntry):
            row["params"] = entry.expected_params
            row["citation"] = entry.citation
            row["aliases"] = list(entry.aliases)
            if with_macs:
                row["gmacs"] = preset_gmacs(entry.name)
        elif entry.kind == "converter":
            row["source"] = entry.source
            row["architectures"] = list(entry.architectures)
            row["summary"] = f"{entry.source} -> {', '.join(entry.architectures)}" + (
                f": {entry.summary}" if entry.summary else ""
            )
        else:
            row["tags"] = sorted(entry.tags)
            row["fields"] = [f for f in entry.config.model_fields if f != "type"]
        rows.append(row)
    if not rows and pattern is not None:
        candidates = [e.name for e in registry.entries(kind)] + list(registry.aliases())
        err.print(
            f"nothing registered matches {pattern!r}{did_you_mean(pattern, candidates)}",
            markup=False,
            highlight=False,
        )
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    presets_only = kind == "preset"
    # one kind: room to show its config fields
    show_fields = kind not in (None, "preset", "converter")
    columns = ["kind", "name", "plugin", "summary"]
    if presets_only:
        columns = ["name", "plugin", "params", *(["GMACs"] if with_macs else []), "summary"]
    elif show_fields:
        columns.append("fields")
    table = Table(title="vitzoo registry", show_lines=False)
    for column in columns:
        table.add_column(
            column, overflow="fold", justify="right" if column in {"params", "GMACs"} else "left"
        )
    for row in rows:
        if presets_only:
            params = human_count(row["params"]) if row.get("params") else "-"
            table.add_row(
                row["name"],
                row["plugin"],
                params,
                *([row["gmacs"]] if with_macs else []),
                row["summary"],
            )
            continue
        summary = row["summary"]
        if row.get("params"):
            summary = f"{summary} [{human_count(row['params'])} params]"
        cells = [row["kind"], row["name"], row["plugin"], summary]
        table.add_row(*cells, *([", ".join(row.get("fields", []))] if show_fields else []))
    out.print(table)


# -- build --------------------------------------------------------------------------------
def module_tree(model: Any, depth: int = 2) -> Tree:
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


@cli.command("build")
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

    With --weights, SOURCE may be "-" to use the weights' own spec (HF folders, vitzoo files).
    """
    from vitzoo.builder import build_from_spec, resolve
    from vitzoo.checkpoint import CheckpointError, save
    from vitzoo.spec import SpecError, assignment_sources
    from vitzoo.weights.load import load_pretrained

    metadata: dict[str, str] = {}
    report = None
    try:
        if weights is not None or source.startswith("hf-hub:"):
            loaded = load_pretrained(
                weights or source,
                None if source == "-" or weights is None else source,
                overrides=parse_sets(sets),
                format=weights_format,
                log=lambda line: err.print(line, markup=False, highlight=False),
            )
            model, metadata = loaded.model, loaded.metadata()
        else:
            # resolved once: the trial build already counts parameters, MACs and what an
            # objective adds, so the summary needs no second build
            resolved = resolve(
                source, parse_sets(sets), sources=assignment_sources(sets), macs=True
            )
            spec, report = resolved.spec, resolved.report
            section = getattr(spec, "weights", None)
            if section is not None:
                loaded = load_pretrained(
                    section.source, spec, format=section.format, strict=section.strict
                )
                model, metadata = loaded.model, loaded.metadata()
            else:
                model = build_from_spec(spec)
    except SpecError as exc:
        fail_with_spec_error(exc)
    except CheckpointError as exc:
        fail_plainly(str(exc))
    info = summarise(model, forward=not no_forward)
    built_spec = model.vitzoo_spec  # also when the spec came with the weights
    if report is None:  # weights gave the spec: resolve it (no second real build)
        report = resolve(built_spec, macs=True).report
    info["gmacs"] = None if report is None or report.macs is None else round(report.macs / 1e9, 3)
    if getattr(built_spec, "objective", None) is not None and report is not None:
        if report.objective_trainable is not None:
            info["objective"] = built_spec.objective.type
            info["objective_trainable_params"] = report.objective_trainable
    if output is not None:
        save(model, output, metadata=metadata)
        info["checkpoint"] = str(output)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"{source}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in info.items():
        shown = f"{human_count(value)} ({value:,})" if key.endswith("params") else str(value)
        if key == "gmacs":
            key, shown = "GMACs", "?" if value is None else f"{value:.2f} (multiply-accumulates)"
        table.add_row(key, shown)
    out.print(table)
    out.print(module_tree(model))


# -- plugins ------------------------------------------------------------------------------
@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True)
def plugins_command(as_json: bool) -> None:
    """Installed plugins, what each registered, and the ones that failed (with why)."""
    system = get_plugin_system()
    records = list(system.records.values())
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in records], indent=2))
        return
    table = Table(title="vitzoo plugins")
    for column in ("name", "module", "distribution", "status", "registered / error"):
        table.add_column(column, overflow="fold")
    for r in records:
        detail = (
            r.error
            if r.status != "ok"
            else ", ".join(plural(n, k) for k, n in r.counts.items()) or "-"
        )
        style = {"ok": "green", "failed": "red", "disabled": "yellow"}[r.status]
        dist = f"{r.distribution} {r.version}".strip()
        table.add_row(r.name, r.module, dist, f"[{style}]{r.status}[/]", detail)
    out.print(table)


# -- schema -------------------------------------------------------------------------------
@cli.command("schema")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file."
)
def schema_command(output: Path | None) -> None:
    """JSON Schema of the spec, for editor autocompletion (yaml-language-server)."""
    from vitzoo.spec import spec_json_schema

    schema = spec_json_schema(get_plugin_system().registry)
    text = json.dumps(schema, indent=2)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {output}  (add `# yaml-language-server: $schema={output}` to your specs)")


# -- check --------------------------------------------------------------------------------
@cli.command("check")
@click.argument("plugin", required=False)
@click.option(
    "--kind",
    type=click.Choice([k for k in KINDS if k != "converter"]),  # converters are data, no checks
    help="Only this kind.",
)
@click.option("--slow", is_flag=True, help="Include slow checks (torch.compile).")
@click.option("--json", "as_json", is_flag=True, help="Every result as JSON.")
def check_command(plugin: str | None, kind: str | None, slow: bool, as_json: bool) -> None:
    """Run the conformance suite (without pytest) over PLUGIN's registrations, or everything."""
    from vitzoo.plugins import PluginLoadError
    from vitzoo.testing.runner import run_checks

    try:
        results = run_checks(plugin, kind, include_slow=slow)
    except (LookupError, PluginLoadError) as exc:
        err.print(f"vitzoo check: {exc}", markup=False, highlight=False)
        sys.exit(2)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2, default=str))
        sys.exit(1 if counts.get("failed") else 0)
    table = Table(title="conformance")
    for column in ("variant", "check", "status", "message"):
        table.add_column(column, overflow="fold")
    colours = {"passed": "green", "failed": "red", "xfail": "yellow", "skipped": "dim"}
    slow_skips: dict[str, list[str]] = {}
    for r in results:
        if r.status == "skipped" and not slow and r.message.startswith("slow check"):
            slow_skips.setdefault(r.check, []).append(r.variant)
        elif r.status != "passed":
            table.add_row(
                r.variant, r.check, f"[{colours.get(r.status, '')}]{r.status}[/]", r.message
            )
    if table.row_count:
        out.print(table)
    for check, variants in sorted(slow_skips.items()):
        out.print(
            f"[dim]skipped {check} on {plural(len(variants), 'variant')} (slow; --slow runs it)[/]",
            highlight=False,
        )
    out.print(
        ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to check",
        highlight=False,
    )
    sys.exit(1 if counts.get("failed") else 0)


# -- wiring -------------------------------------------------------------------------------
def add_builtin_commands(group: click.Group) -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        for command in getattr(module, "COMMANDS", []):
            group.add_command(command)


def add_plugin_commands(group: click.Group, system: PluginSystem) -> None:
    """Let each plugin add commands; a plugin that raises is reported, the CLI keeps working."""
    for impl in system.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=group)
        except Exception as exc:  # a broken plugin must never break the CLI
            err.print(
                f"vitzoo: plugin {impl.plugin_name!r} failed to add commands ({type(exc).__name__}: {exc})"
            )


def main(argv: list[str] | None = None) -> None:
    add_builtin_commands(cli)
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:  # accepted after the command too: vitzoo build x.yaml --debug
        args.remove("--debug")
        args.insert(0, "--debug")
    if args and args[0] == "--debug":
        rest = args[1:]
    else:
        rest = args
    if rest and rest[0] not in cli.commands and rest[0] not in ("-h", "--help", "--version"):
        add_plugin_commands(cli, get_plugin_system())
    elif not rest or rest[0] in ("-h", "--help"):
        add_plugin_commands(cli, get_plugin_system())
    cli.main(args=args, prog_name="vitzoo")


if __name__ == "__main__":
    main()
