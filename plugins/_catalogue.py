"""The shipped preset catalogue (``presets_catalogue.yaml``), shared by the built-in families.

Named for what it is -- paper presets as data -- so it is not mistaken for the live registry
(:mod:`vitzoo.registry`, what the loaded plugins registered).

Each preset in the catalogue names the built-in plugin that owns it (``plugin: vit``); a family's
``register_presets`` hook registers exactly its own entries, so provenance in ``vitzoo list`` is
true and disabling a family removes its presets too. An entry's ``aliases`` (e.g. the timm model
name) belong to the same plugin, so they come and go with it; ``macs`` is the paper's stated
multiply-accumulate count at the preset's input size, where it states one.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

#: The catalogue file, shipped inside ``vitzoo_plugins`` (pyproject package-data).
CATALOGUE_FILE = "presets_catalogue.yaml"


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    path = resources.files("vitzoo_plugins").joinpath(CATALOGUE_FILE)
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    return dict(data.get("presets", {}))


def register_catalogue_presets(register: Any, plugin: str) -> None:
    """Register every catalogue preset whose ``plugin`` field is ``plugin``."""
    for name, entry in catalogue().items():
        if entry.get("plugin") != plugin:
            continue
        register(
            name,
            entry["spec"],
            citation="; ".join(filter(None, (entry.get("citation", ""), entry.get("macs_note")))),
            expected_params=entry.get("params"),
            summary=entry.get("summary", ""),
            tags=entry.get("tags", ()),
            # released timm names are aliases too (the `released` field of the root registry.yaml)
            aliases=(*entry.get("aliases", ()), *entry.get("released", {}).get("timm", ())),
            expected_macs=entry.get("macs"),
        )
