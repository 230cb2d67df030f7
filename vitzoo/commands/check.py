"""``vitzoo check [PLUGIN]``: the conformance suite without pytest (the work is in
:mod:`vitzoo.testing.runner`); exit status 1 when a check fails, as a test run would."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from vitzoo.commands.common import err, out
from vitzoo.errors import PluginLoadError
from vitzoo.registry import KINDS
from vitzoo.terminal import plural

#: Status -> rich colour in the results table.
COLOURS = {"passed": "green", "failed": "red", "xfail": "yellow", "skipped": "dim"}


def print_results(results: list[Any], counts: dict[str, int], slow: bool) -> None:
    """Everything that did not pass in a table; slow checks skipped on purpose in one line per
    check (not one row per variant); then the totals."""
    table = Table(title="conformance")
    for column in ("variant", "check", "status", "message"):
        table.add_column(column, overflow="fold")
    slow_skips: dict[str, list[str]] = {}
    for r in results:
        if r.status == "skipped" and not slow and r.message.startswith("slow check"):
            slow_skips.setdefault(r.check, []).append(r.variant)
        elif r.status != "passed":
            table.add_row(
                r.variant, r.check, f"[{COLOURS.get(r.status, '')}]{r.status}[/]", r.message
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


@click.command("check")
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
    else:
        print_results(results, counts, slow)
    sys.exit(1 if counts.get("failed") else 0)


COMMANDS = [check_command]
