"""docs/plugins.md is the plugin contract: every Python block on it runs, every module path it
names exists, and its tag table is the declared vocabulary (``vitzoo.tags.TAGS``), so the page
cannot drift from the code."""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path

import pytest

from vitzoo.tags import TAGS

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "plugins.md"
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


#: Dotted names of vitzoo's modules and their attributes, as the page writes them in prose.
DOTTED = re.compile(r"(?<![\w.])vitzoo(?:_plugins)?(?:\.[A-Za-z_]\w*)+")
#: Repository paths the page names (``vitzoo/rules.py``, ``tests/test_presets.py``).
REPO_PATH = re.compile(r"(?<![\w./])(?:vitzoo|plugins|tests|tools|docs|examples)/[\w./-]*\w")


def prose(text: str) -> str:
    """The page without its fenced blocks (those run, or are illustrations such as a layout)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def resolves(dotted: str) -> bool:
    """The longest importable module prefix, then attributes for the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(target, attr):
                return False
            target = getattr(target, attr)
        return True
    return False


def test_every_module_path_the_page_names_exists() -> None:
    text = prose(PAGE.read_text(encoding="utf-8"))
    names = sorted(set(DOTTED.findall(text)))
    assert "vitzoo.rules" in names, "the pattern finds the page's module names"
    missing = [n for n in names if not resolves(n)]
    assert not missing, f"docs/plugins.md names what does not exist: {missing}"
    paths = sorted(set(REPO_PATH.findall(text)))
    assert "vitzoo/rules.py" in paths
    absent = [p for p in paths if not (ROOT / p).exists()]
    assert not absent, f"docs/plugins.md names files that do not exist: {absent}"


def test_tag_table_is_the_vocabulary() -> None:
    text = PAGE.read_text(encoding="utf-8")
    table = text.split("<!-- tags-table", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (.*?) \|$", table, flags=re.M))
    assert rows == TAGS
