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
#: A block that goes on from the block above it (a tutorial told in steps) says so on its first
#: line; it runs after that block, in the same module, so it sees what the earlier steps defined.
CONTINUED = "# continued"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(1)))
    return blocks


def programs(blocks: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """The blocks grouped into the modules they run as: a ``# continued`` block joins the
    program of the block before it; every other block starts a program of its own."""
    out: list[list[tuple[int, str]]] = []
    for line, code in blocks:
        if code.startswith(CONTINUED):
            if not out:
                raise ValueError(f"docs/plugins.md:{line}: the first block cannot continue one")
            out[-1].append((line, code))
        else:
            out.append([(line, code)])
    return out


BLOCKS = python_blocks(PAGE.read_text(encoding="utf-8"))
PROGRAMS = programs(BLOCKS)


def program_id(program: list[tuple[int, str]]) -> str:
    first, last = program[0][0], program[-1][0]
    return f"line{first}" if first == last else f"lines{first}-{last}"


def test_the_page_has_one_example_per_hook() -> None:
    from vitzoo import hookspecs

    text = PAGE.read_text(encoding="utf-8")
    hooks = [*hookspecs.HOOK_KINDS, "register_commands"]
    for hook in hooks:
        assert f"### `{hook}`" in text, f"docs/plugins.md has no entry for {hook}"
        assert any(f"def {hook}(" in code for _, code in BLOCKS), f"no example implements {hook}"


@pytest.mark.parametrize("program", PROGRAMS, ids=[program_id(p) for p in PROGRAMS])
def test_python_block_runs(program: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block (with the ``# continued`` blocks after it) runs as a module of its own (its
    plugin registers into a fresh system)."""
    line, code = program[0]
    if code.startswith(NOT_RUN):
        pytest.skip(code.splitlines()[0])
    name = f"vitzoo_docs_example_{line}"
    module = types.ModuleType(name)
    module.__file__ = f"{PAGE}:{line}"
    monkeypatch.setitem(sys.modules, name, module)
    for line, code in program:
        padded = "\n" * (line - 1) + code  # tracebacks point at the page's own line numbers
        exec(compile(padded, str(PAGE), "exec"), module.__dict__)


def test_continued_blocks_follow_a_block() -> None:
    assert sum(len(p) for p in PROGRAMS) == len(BLOCKS)
    assert any(len(p) > 1 for p in PROGRAMS), "the tutorial's steps run as one program"
    with pytest.raises(ValueError, match="cannot continue"):
        programs([(3, f"{CONTINUED}\npass\n")])


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


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_page_has_its_heading() -> None:
    text = prose(PAGE.read_text(encoding="utf-8"))
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "the page links its own sections"
    assert links <= anchors, f"links to no heading: {sorted(links - anchors)}"


def test_tag_table_is_the_vocabulary() -> None:
    text = PAGE.read_text(encoding="utf-8")
    table = text.split("<!-- tags-table", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (.*?) \|$", table, flags=re.M))
    assert rows == TAGS
