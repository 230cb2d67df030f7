"""The catalogue of the built-in presets (``registry.yaml``), shared by the built-in families.

Named for what it is -- paper presets as data -- so it is not mistaken for the live registry
(:mod:`vitzoo.registry`, what the loaded plugins registered).

Each preset in the catalogue names the built-in plugin that owns it (``plugin: vit``); a family's
``register_presets`` hook registers exactly its own entries, so provenance in ``vitzoo list`` is
true and disabling a family removes its presets too. An entry's ``aliases`` (old names, timm
names without released weights) and ``released`` names (per source kind: ``timm``, ``hf``,
``official``; released timm names are aliases too) belong to the same plugin, so they come and
go with it; ``macs`` is the paper's stated multiply-accumulate count at the preset's input size,
where it states one.

Where the file is: ``registry.yaml`` at the repository root. A built wheel carries it inside
this package (``tools/build_catalogue.py`` copies it at build time); an editable install maps
this package onto ``plugins/`` and builds nothing, so the source tree's root file is read.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from vitzoo.spec import load_yaml

#: The catalogue file: shipped inside ``vitzoo_plugins``; at the root of a source tree.
CATALOGUE_FILE = "registry.yaml"


def catalogue_path() -> Traversable:
    """The installed copy (package data of a wheel) or, in a source tree, the root file."""
    shipped = resources.files("vitzoo_plugins").joinpath(CATALOGUE_FILE)
    if shipped.is_file():
        return shipped
    source_tree = Path(__file__).resolve().parent.parent / CATALOGUE_FILE
    if source_tree.is_file():
        return source_tree
    raise FileNotFoundError(
        f"the preset catalogue {CATALOGUE_FILE} is neither in the installed vitzoo_plugins "
        f"package nor at the root of the source tree ({source_tree}); reinstall vitzoo"
    )


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    text = catalogue_path().read_text(encoding="utf-8")
    data = load_yaml(text) or {}  # as every spec is read: ``lr: 3e-4`` is a number
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
            aliases=entry.get("aliases", ()),
            expected_macs=entry.get("macs"),
            released=entry.get("released", {}),
            weights=entry.get("weights", {}),
        )
