"""Shared fixtures: fake installed plugin distributions for the loader tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

GOOD_PLUGIN = '''
from typing import Literal
import vitzoo
from vitzoo.components.attention import MhsaConfig, MultiHeadAttention

class PlainConfig(MhsaConfig):
    """MHSA under another name (a third-party attention)."""
    type: Literal["fake-attention"] = "fake-attention"

@vitzoo.hookimpl
def register_attention(register):
    register("fake-attention", lambda cfg, ctx: MultiHeadAttention(ctx.dim, ctx.num_heads, cfg), PlainConfig)
'''

BROKEN_IMPORT = "import does_not_exist_anywhere\n"

BAD_SIGNATURE = """
import vitzoo

@vitzoo.hookimpl
def register_attention(register, unexpected_argument):
    pass
"""

DUPLICATE = """
import vitzoo
from vitzoo.components.attention import MhsaConfig, build_mhsa

@vitzoo.hookimpl
def register_attention(register):
    register("mhsa", build_mhsa, MhsaConfig)
"""

RAISES_IN_HOOK = """
import vitzoo
from typing import Literal
from vitzoo.components.pooling import MeanPoolConfig, build_mean_pool

class HalfConfig(MeanPoolConfig):
    type: Literal["half-registered"] = "half-registered"

@vitzoo.hookimpl
def register_pooling(register):
    register("half-registered", build_mean_pool, HalfConfig)
    raise RuntimeError("boom while registering")
"""

PLUGINS = {
    "good": GOOD_PLUGIN,
    "brokenimport": BROKEN_IMPORT,
    "badsig": BAD_SIGNATURE,
    "duplicate": DUPLICATE,
    "raises": RAISES_IN_HOOK,
}


def write_fake_distributions(root: Path) -> Path:
    """One ``vitzoo_fake<name>-0.1.dist-info`` per plugin, each with a ``vitzoo`` entry point."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in PLUGINS.items():
        module = f"vitzoo_fake_{name}"
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"vitzoo_fake{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: vitzoo-fake{name}\nVersion: 0.1\n"
        )
        (info / "entry_points.txt").write_text(f"[vitzoo]\nfake-{name} = {module}\n")
    return root


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_fake_distributions(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    return root
