"""Build step: ship the root ``registry.yaml`` inside the installed ``vitzoo_plugins`` package.

Why a build step: the catalogue of built-in presets lives at the repository root (where the
product layout puts it, beside pyproject.toml), but setuptools' package data must sit inside a
package folder, and ``vitzoo_plugins`` is the ``plugins/`` folder. This ``build_py`` copies the
file to ``vitzoo_plugins/registry.yaml`` in every wheel (and so in every ``pip install .``);
pyproject.toml names it (``[tool.setuptools] cmdclass``), so no setup.py is needed.

An editable install builds nothing: its import hook maps ``vitzoo_plugins`` onto ``plugins/``,
and the loader (``plugins/_catalogue.py``) reads the root file of that source tree instead.
MANIFEST.in puts both this module and registry.yaml in the sdist, so a wheel built from the
sdist (``python -m build``) ships the catalogue too.
"""

from __future__ import annotations

import os

from setuptools.command.build_py import build_py

#: The catalogue file, at the repository root and, once built, in the package.
CATALOGUE_FILE = "registry.yaml"
PACKAGE = "vitzoo_plugins"


class BuildPy(build_py):
    """``build_py`` plus the root catalogue copied into ``vitzoo_plugins``."""

    def _catalogue_target(self) -> str:
        return os.path.join(self.build_lib, PACKAGE, CATALOGUE_FILE)

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the source tree's file
        target = self._catalogue_target()
        self.mkpath(os.path.dirname(target))
        self.copy_file(CATALOGUE_FILE, target)

    def get_output_mapping(self) -> dict[str, str]:
        """Declared like package data, so setuptools' strict editable mode links it too."""
        return {**super().get_output_mapping(), self._catalogue_target(): CATALOGUE_FILE}
