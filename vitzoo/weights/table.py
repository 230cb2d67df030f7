"""The README's pretrained-weights table, generated from the registered converters.

Each converter lists ``equivalents`` (vitzoo preset, source model name) and ``verified_by`` (the
test proving logits equal within 1e-5). ``python -m vitzoo.weights.table`` prints the Markdown
table; tests/test_weights.py checks that the README holds the current one.
"""

from __future__ import annotations

from vitzoo.plugins import PluginSystem, get_plugin_system

SOURCE_TITLES = {"timm": "timm", "hf": "Hugging Face", "official": "official"}
START = "<!-- weights-table:start (generated: python -m vitzoo.weights.table) -->"
END = "<!-- weights-table:end -->"


def markdown_table(system: PluginSystem | None = None) -> str:
    """One row per vitzoo preset: its counterpart per source and whether outputs are proven equal."""
    registry = (system or get_plugin_system()).registry
    rows: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for converter in registry.entries("converter"):
        for preset, name in converter.equivalents:
            cell = rows.setdefault(preset, {}).setdefault(converter.source, [])
            cell.append((name, converter.verified_by))
    lines = [
        START,
        "| vitzoo preset | timm | Hugging Face | official | outputs identical (<= 1e-5) |",
        "|---|---|---|---|---|",
    ]
    for preset in sorted(rows):
        by_source = rows[preset]
        names = [
            ", ".join(f"`{n}`" for n, _ in by_source.get(source, [])) or "-"
            for source in SOURCE_TITLES
        ]
        proofs = [
            f"{SOURCE_TITLES[source]}: " + ("yes" if all(v for _, v in cells) else "not proven")
            for source, cells in sorted(by_source.items())
        ]
        lines.append(f"| `{preset}` | {' | '.join(names)} | {'; '.join(proofs)} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
