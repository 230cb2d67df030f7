"""Write the reference fixtures (peer models' perturbed weights, inputs, outputs) under tests/data.

Usage, in the reference environment (never the project's own)::

    ../shared/tools/reference-env/make.sh /tmp/refenv
    /tmp/refenv/bin/python tools/make_reference_fixtures.py            # every family
    /tmp/refenv/bin/python tools/make_reference_fixtures.py timm-cait  # only these

Each module in ``tools/reference_fixtures/`` (other than ``__init__``) defines ``FIXTURES``, a list
of :class:`reference_fixtures.Fixture`. Tests read the files with ``tests/reference_data.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_fixtures  # noqa: E402
from reference_fixtures import Fixture, write_fixture  # noqa: E402


def all_fixtures() -> list[Fixture]:
    found: list[Fixture] = []
    for info in sorted(pkgutil.iter_modules(reference_fixtures.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"reference_fixtures.{info.name}")
        found.extend(getattr(module, "FIXTURES", []))
    names = [f.name for f in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"duplicate fixture names: {duplicates}")
    return found


def main(argv: list[str]) -> int:
    fixtures = all_fixtures()
    wanted = set(argv)
    unknown = wanted - {f.name for f in fixtures}
    if unknown:
        raise SystemExit(f"unknown fixtures {sorted(unknown)}; known: {[f.name for f in fixtures]}")
    for fixture in fixtures:
        if wanted and fixture.name not in wanted:
            continue
        path = write_fixture(fixture)
        print(
            f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}: "
            f"{path.stat().st_size / 1024:.0f} KiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
