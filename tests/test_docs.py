"""docs/plugins.md is the plugin contract: every Python block on it runs, and its tag table is
the declared vocabulary (``vitzoo.tags.TAGS``), so the page cannot drift from the code."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from vitzoo.tags import TAGS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
#: A block that cannot run on its own says so on its first line.
NOT_RUN = "# not run"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(1)))
    return blocks


BLOCKS = python_blocks(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_one_example_per_hook() -> None:
    from vitzoo import hookspecs

    text = PAGE.read_text(encoding="utf-8")
    hooks = [*hookspecs.HOOK_KINDS, "register_commands"]
    for hook in hooks:
        assert f"### `{hook}`" in text, f"docs/plugins.md has no entry for {hook}"
        assert any(f"def {hook}(" in code for _, code in BLOCKS), f"no example implements {hook}"


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_python_block_runs(line: int, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block runs as a module of its own (its plugin registers into a fresh system)."""
    if code.startswith(NOT_RUN):
        pytest.skip(code.splitlines()[0])
    name = f"vitzoo_docs_example_{line}"
    module = types.ModuleType(name)
    module.__file__ = f"{PAGE}:{line}"
    monkeypatch.setitem(sys.modules, name, module)
    padded = "\n" * (line - 1) + code  # tracebacks point at the page's own line numbers
    exec(compile(padded, str(PAGE), "exec"), module.__dict__)


def test_tag_table_is_the_vocabulary() -> None:
    text = PAGE.read_text(encoding="utf-8")
    table = text.split("<!-- tags-table", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (.*?) \|$", table, flags=re.M))
    assert rows == TAGS
