"""What a non-editable install ships: every package folder, and the root catalogue.

Why: ``packages`` is an explicit list (``plugins/`` installs as ``vitzoo_plugins``), and a split
that turns a module into a package (``vitzoo/spec/``, ``plugins/video/``) is invisible to an
editable install -- the test environment -- but missing from a wheel. Likewise the preset
catalogue ``registry.yaml`` lives at the repository root, outside every package: an editable
install reads it there, a wheel only has it if the build step copied it in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
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


# -- the catalogue in a built wheel ------------------------------------------------------------
#: Runs inside the unpacked wheel (PYTHONPATH), printing where the catalogue was read from and
#: what the vit plugin registered from it.
PROBE = """
import json, sys
import vitzoo, vitzoo_plugins
from vitzoo_plugins._catalogue import catalogue_path
system = vitzoo.load_plugins(only=["vit"], strict=True)
preset = system.registry.get("preset", "vit_base_patch16_224")
print(json.dumps({
    "catalogue": str(catalogue_path()),
    "vitzoo": vitzoo.__file__,
    "plugins": vitzoo_plugins.__file__,
    "preset": preset.name,
    "hf": list(preset.released_names("hf")),
}))
"""


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_a_built_wheel_ships_the_catalogue_and_reads_it_when_installed(tmp_path: Path) -> None:
    """``registry.yaml`` sits at the root, outside every package folder; the build step
    (tools/build_catalogue.py) must put it in the wheel, or an installed vitzoo has no presets.

    Built the way ``python -m build`` does, offline: an sdist (so MANIFEST.in is proven too),
    then a wheel from the unpacked sdist with pip (no build isolation, no index). The wheel is
    unpacked into a folder that Python imports from first, and the loader must read the copy
    inside it, not the source tree's."""
    sdist_dir, wheel_dir, site = tmp_path / "sdist", tmp_path / "wheel", tmp_path / "site"
    build_sdist = (
        f"from setuptools import build_meta; print(build_meta.build_sdist({str(sdist_dir)!r}))"
    )
    name = _run([sys.executable, "-c", build_sdist], ROOT).strip().splitlines()[-1]
    with tarfile.open(sdist_dir / name) as archive:
        # our own sdist; the "data" filter (Python >= 3.11.4) only where it exists
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(tmp_path / "src", **safe)
    (source,) = (tmp_path / "src").iterdir()
    pip = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-index"]
    _run([*pip, "--no-build-isolation", "--wheel-dir", str(wheel_dir), "-q"], tmp_path)
    (wheel,) = wheel_dir.glob("vitzoo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "vitzoo_plugins/registry.yaml" in names
        assert not {n for n in names if n.endswith("registry.yaml")} - {
            "vitzoo_plugins/registry.yaml"
        }, "the catalogue must not land at the top of site-packages"
        assert not any(n.startswith("tools/") for n in names), "the build step is not shipped"
        shipped = archive.read("vitzoo_plugins/registry.yaml")
        archive.extractall(site)
    assert shipped == (ROOT / "registry.yaml").read_bytes()

    env = {**os.environ, "PYTHONPATH": str(site), "VITZOO_DISABLE_PLUGINS": ""}
    seen = json.loads(_run([sys.executable, "-c", PROBE], tmp_path, env).splitlines()[-1])
    for key in ("catalogue", "vitzoo", "plugins"):
        assert Path(seen[key]).is_relative_to(site), f"{key} came from {seen[key]}, not the wheel"
    assert Path(seen["catalogue"]) == site / "vitzoo_plugins" / "registry.yaml"
    assert seen["preset"] == "vit-b16" and seen["hf"] == ["google/vit-base-patch16-224"]
