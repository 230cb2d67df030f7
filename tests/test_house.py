"""The house rules the build enforces: layers point one way, and a spec is resolved once per path.

The layering itself is an import-linter contract (``[tool.importlinter]`` in pyproject.toml);
this test runs it, so CI fails on the first upward import -- a function-level one included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import vitzoo
import vitzoo.builder
import vitzoo.trial
from vitzoo.cli import cli
from vitzoo.components.vit import VisionTransformer
from vitzoo.registration_examples import TINY_VIT

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run(
        [exe, "--config", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The device of every ViT constructed (``meta`` for a trial build, ``cpu`` for a real one)."""
    seen: list[str] = []
    original = VisionTransformer.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(str(torch.get_default_device()))
        original(self, *args, **kwargs)

    monkeypatch.setattr(VisionTransformer, "__init__", counting)
    return seen


def test_vitzoo_build_resolves_once_and_builds_once(
    builds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``vitzoo build vit-b16``: one resolution (whose trial build on the meta device counts the
    parameters and MACs) and one real build -- no extra builds for the summary."""
    resolutions: list[Any] = []
    original = vitzoo.builder.resolve
    monkeypatch.setattr(vitzoo.trial, "_cache", OrderedDict())  # no trial remembered from before

    def counting(*args: Any, **kwargs: Any) -> Any:
        resolutions.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(vitzoo.builder, "resolve", counting)
    result = CliRunner().invoke(cli, ["build", "vit-b16", "--json", "--no-forward"])
    assert result.exit_code == 0, result.output
    assert resolutions == ["vit-b16"]
    assert builds == ["meta", "cpu"]
    assert '"gmacs": 17.' in result.output  # counted by that one trial build


def test_loading_weights_builds_the_target_once(builds: list[str], tmp_path: Path) -> None:
    """Weights for the same model need no meta twins: the real model's shapes are the target's,
    and the checkpoint was made for exactly that model."""
    spec = {"model": {"type": "vit", **TINY_VIT}}
    path = vitzoo.save(vitzoo.build(spec), tmp_path / "m.safetensors")
    builds.clear()
    vitzoo.build(weights=path)
    assert builds.count("cpu") == 1
    assert builds.count("meta") <= 1  # at most the trial build of resolving its spec


def test_vitzoo_build_of_a_checkpoint_runs_one_trial_and_one_build(
    builds: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``vitzoo build CKPT``: the load resolves the checkpoint's spec with one trial build that
    also counts the MACs the summary shows -- no second trial for the summary."""
    spec = {"model": {"type": "vit", **TINY_VIT}}
    path = vitzoo.save(vitzoo.build(spec), tmp_path / "m.safetensors")
    monkeypatch.setattr(vitzoo.trial, "_cache", OrderedDict())
    builds.clear()
    result = CliRunner().invoke(cli, ["build", str(path), "--json", "--no-forward"])
    assert result.exit_code == 0, result.output
    assert builds == ["meta", "cpu"]
    assert json.loads(result.output)["macs"] > 0
