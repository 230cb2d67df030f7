"""The ``pytest11`` plugin vitzoo installs: fixtures and the ``slow`` marker, nothing automatic.

pytest loads this module in every project of an environment where vitzoo is installed, so it
imports nothing heavy (no torch, no plugins) and changes no test unless the test asks for one of
its fixtures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from vitzoo.plugins import PluginSystem


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: long-running vitzoo conformance checks (torch.compile)"
    )


@pytest.fixture
def vitzoo_system() -> PluginSystem:
    """A fresh, strict plugin system with the core and every installed plugin.

    Independent of the process-wide system, so a test may register extra plugins into it
    (``vitzoo.plugins.register_plugin``) without affecting other tests.
    """
    from vitzoo.plugins import load_plugins

    return load_plugins(strict=True)
