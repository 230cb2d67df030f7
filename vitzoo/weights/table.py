"""The README's pretrained-weights table, derived from what is registered.

Each fact has one home, and the table only joins them: a preset's ``released`` names (for the
built-in presets, the catalogue ``registry.yaml``) say under which names weights computing its
function are released, per source kind; the converters registered for the preset's architecture
say which source kinds load into it, and their ``verified_by`` names the test proving the
outputs identical by the project's fidelity rule (:data:`FIDELITY_RULE`). A released name whose
source kind has no converter for the architecture shows "no converter" (tests/test_weights.py
keeps that from happening). ``python -m vitzoo.weights.table`` prints the Markdown table;
tests/test_weights.py checks that the README holds the current one.
"""

from __future__ import annotations

from vitzoo.plugins import PluginSystem, get_plugin_system
from vitzoo.registry import PresetEntry
from vitzoo.weights.selection import converters_for

SOURCE_TITLES = {"timm": "timm", "hf": "Hugging Face", "official": "official"}
#: What "outputs identical" means (tests/fidelity.py holds the rule; its test checks this text).
#: The pipes are escaped so they do not end the Markdown cell.
FIDELITY_RULE = r"float64 <= 1e-9; float32 <= 1e-5 x max(1, max\|ref\|)"
START = "<!-- weights-table:start (generated: python -m vitzoo.weights.table) -->"
END = "<!-- weights-table:end -->"


def proof(preset: PresetEntry, source: str, system: PluginSystem | None = None) -> str:
    """``yes`` when every converter that loads ``source`` weights into the preset's architecture
    is verified, ``not proven`` when one is not, ``no converter`` when none is registered."""
    architecture = str(preset.spec.get("model", {}).get("type", ""))
    loaders = converters_for(architecture, source, system=system)
    if not loaders:
        return "no converter"
    return "yes" if all(c.verified_by for c in loaders) else "not proven"


def markdown_table(system: PluginSystem | None = None) -> str:
    """One row per preset with released weights: their names per source and the proof."""
    system = system or get_plugin_system()
    lines = [
        START,
        f"| vitzoo preset | timm | Hugging Face | official | outputs identical ({FIDELITY_RULE}) |",
        "|---|---|---|---|---|",
    ]
    for preset in system.registry.entries("preset"):
        if not preset.released:
            continue
        names = [
            ", ".join(f"`{n}`" for n in preset.released_names(source)) or "-"
            for source in SOURCE_TITLES
        ]
        sources = sorted({r.source for r in preset.released})
        proofs = [f"{SOURCE_TITLES[s]}: {proof(preset, s, system)}" for s in sources]
        lines.append(f"| `{preset.name}` | {' | '.join(names)} | {'; '.join(proofs)} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
