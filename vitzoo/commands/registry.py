"""``vitzoo list``, ``vitzoo plugins``, ``vitzoo schema``: what is registered, by whom, and the
spec schema it makes (the work is in :mod:`vitzoo.registry` and :mod:`vitzoo.plugins`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.table import Table

from vitzoo.commands.common import err, human_count, out
from vitzoo.plugins import get_plugin_system
from vitzoo.registry import KINDS, PresetEntry, Registry, name_matches
from vitzoo.suggest import did_you_mean
from vitzoo.terminal import plural


def preset_macs_or_none(name: str) -> int | None:
    """The preset's MACs at its input size (counted on meta), or None when it cannot run there."""
    from vitzoo.flops import preset_macs

    try:
        return preset_macs(name)
    except Exception:  # a preset that cannot run on meta must not break the listing
        return None


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


def list_pretrained(pattern: str | None, as_json: bool) -> None:
    from vitzoo.commands.weights import pretrained_rows, tags_table

    rows = pretrained_rows(get_plugin_system().registry, pattern)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    out.print(tags_table(rows, "released weights (vitzoo.build('PRESET.TAG'))"))


def entry_row(entry: Any, with_macs: bool) -> dict[str, Any]:
    """One registration as a JSON-able row: presets carry counts and aliases, converters what
    they convert, every other kind its tags and config fields."""
    row: dict[str, Any] = {
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
            from vitzoo.flops import format_gmacs

            macs = preset_macs_or_none(entry.name)
            row["macs"] = macs
            row["gmacs"] = "?" if macs is None else format_gmacs(macs)
    elif entry.kind == "converter":
        row["source"] = entry.source
        row["architectures"] = list(entry.architectures)
        row["summary"] = f"{entry.source} -> {', '.join(entry.architectures)}" + (
            f": {entry.summary}" if entry.summary else ""
        )
    else:
        row["tags"] = sorted(entry.tags)
        row["fields"] = [f for f in entry.config.model_fields if f != "type"]
    return row


def fail_no_match(registry: Registry, pattern: str, kind: str | None) -> NoReturn:
    """Nothing matched: say so, with the closest names, and exit 1 (as ``grep`` does)."""
    candidates = [e.name for e in registry.entries(kind)] + list(registry.aliases())
    err.print(
        f"nothing registered matches {pattern!r}{did_you_mean(pattern, candidates)}",
        markup=False,
        highlight=False,
    )
    sys.exit(1)


def registry_table(rows: list[dict[str, Any]], kind: str | None, with_macs: bool) -> Table:
    """Presets alone: counts (and MACs); one other kind: its config fields; else the overview."""
    presets_only = kind == "preset"
    show_fields = kind not in (None, "preset", "converter")  # one kind: room for its fields
    columns = ["kind", "name", "plugin", "summary"]
    if presets_only:
        columns = ["name", "plugin", "params", *(["MACs"] if with_macs else []), "summary"]
    elif show_fields:
        columns.append("fields")
    table = Table(title="vitzoo registry", show_lines=False)
    for column in columns:
        table.add_column(
            column, overflow="fold", justify="right" if column in {"params", "MACs"} else "left"
        )
    for row in rows:
        if presets_only:
            params = human_count(row["params"]) if row.get("params") else "-"
            from vitzoo.flops import format_macs

            macs = [format_macs(row["macs"], suffix="")] if with_macs else []
            table.add_row(row["name"], row["plugin"], params, *macs, row["summary"])
            continue
        summary = row["summary"]
        if row.get("params"):
            summary = f"{summary} [{human_count(row['params'])} params]"
        cells = [row["kind"], row["name"], row["plugin"], summary]
        table.add_row(*cells, *([", ".join(row.get("fields", []))] if show_fields else []))
    return table


@click.command("list")
@click.argument("pattern", required=False)
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind.")
@click.option("--aliases", "show_aliases", is_flag=True, help="Preset aliases (e.g. timm names).")
@click.option(
    "--macs",
    "with_macs",
    is_flag=True,
    help="Presets: add a MACs column (multiply-accumulates at the preset's input size, "
    "counted on the meta device; takes a while).",
)
@click.option(
    "--pretrained",
    is_flag=True,
    help="Presets' released weights by tag (PRESET.TAG for vitzoo.build / --pretrained).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(
    pattern: str | None,
    kind: str | None,
    show_aliases: bool,
    with_macs: bool,
    pretrained: bool,
    as_json: bool,
) -> None:
    """Every registered component, architecture, objective and preset, and its plugin.

    PATTERN filters names (and preset aliases) with shell-style wildcards, quoted:
    vitzoo list 'cait-*'; a word without wildcards matches every name containing it.
    """
    if show_aliases:
        list_aliases(pattern, as_json)
        return
    if pretrained:
        list_pretrained(pattern, as_json)
        return
    if with_macs and kind is None:
        kind = "preset"  # only presets have an input size to count at
    registry = get_plugin_system().registry
    entries = registry.entries(kind) if pattern is None else registry.find(pattern, kind)
    rows = [entry_row(entry, with_macs) for entry in entries]
    if not rows and pattern is not None:
        fail_no_match(registry, pattern, kind)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    out.print(registry_table(rows, kind, with_macs))


@click.command("plugins")
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


@click.command("schema")
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


COMMANDS = [list_command, plugins_command, schema_command]
