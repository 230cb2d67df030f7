"""Every package folder is listed in pyproject.toml, so a non-editable install ships it.

Why: ``packages`` is an explicit list (``plugins/`` installs as ``vitzoo_plugins``), and a split
that turns a module into a package (``vitzoo/spec/``, ``plugins/video/``) is invisible to an
editable install -- the test environment -- but missing from a wheel.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = config["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join((name, *relative.parts)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
