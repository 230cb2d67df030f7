"""Issue 20 item 2: a plugin's presets are conformance variants, held to the preset checks.

A third-party preset with an unknown attention type, or ``num_heads: 5`` at ``dim: 192``,
passed ``vitzoo plugins``, ``vitzoo check PLUGIN`` and ``parametrize_with_checks`` and failed
only in a user's build; ``vitzoo check PLUGIN --kind preset`` crashed. Each check is also shown
to catch the bug it is for (as tests/test_checks_catch_bugs.py does for the model checks).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from vitzoo.cli import cli
from vitzoo.plugins import load_plugins
from vitzoo.testing import check_variant, parametrize_with_checks, variants, yield_checks

TINY = {
    "type": "vit",
    "image_size": 32,
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "linear", "patch_size": 8},
}

PRESETS_PLUGIN = f"""
import vitzoo

TINY = {TINY!r}


@vitzoo.hookimpl
def register_presets(register):
    register("good-nano", {{"model": TINY}}, summary="fine", expected_params=32_554)
    register(
        "unknown-attention",
        {{"model": {{**TINY, "attention": {{"type": "flash-mhsa"}}}}}},
        summary="an attention nobody registered",
    )
    register("odd-heads", {{"model": {{**TINY, "dim": 192, "num_heads": 5}}}}, summary="5 heads")
    register("wrong-count", {{"model": TINY}}, summary="count off", expected_params=40_000)
    register("no-summary", {{"model": TINY}})
"""


@pytest.fixture
def presets_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed third-party distribution whose entry point registers only presets."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "vitzoo_fake_presets.py").write_text(textwrap.dedent(PRESETS_PLUGIN))
    info = root / "vitzoo_fakepresets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vitzoo-fakepresets\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[vitzoo]\nfake-presets = vitzoo_fake_presets\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("VITZOO_LOAD_PLUGINS", "fake-presets,vit")
    return "fake-presets"


def _failures(plugin: str) -> dict[str, dict[str, str]]:
    system = load_plugins(strict=True, quiet=True)
    out: dict[str, dict[str, str]] = {}
    for variant in variants(plugin, "preset", system=system):
        for r in check_variant(variant, on_fail="collect"):
            if r.status == "failed":
                out.setdefault(variant.name, {})[r.check] = r.message
    return out


def test_presets_are_variants_and_each_bug_is_caught(presets_plugin: str) -> None:
    failures = _failures(presets_plugin)
    assert "good-nano" not in failures
    unknown = failures["unknown-attention"]["check_preset_validates"]
    assert "preset 'unknown-attention'  model.attention.type: unknown type 'flash-mhsa'" in unknown
    heads = failures["odd-heads"]["check_preset_validates"]
    assert "preset 'odd-heads'  model.num_heads" in heads and "192" in heads
    assert "40,000 declared" in failures["wrong-count"]["check_preset_trial_build"]
    assert set(failures["no-summary"]) == {"check_preset_registration"}


def test_parametrize_with_checks_includes_the_plugins_presets(presets_plugin: str) -> None:
    system = load_plugins(strict=True, quiet=True)
    mark = parametrize_with_checks(variants(plugin=presets_plugin, system=system))
    ids = [p.id for p in mark.args[1]]
    assert "preset:odd-heads-check_preset_validates" in ids
    assert "preset:good-nano-check_preset_trial_build" in ids


def test_vitzoo_check_kind_preset_reports_the_broken_presets(presets_plugin: str) -> None:
    result = CliRunner().invoke(cli, ["check", presets_plugin, "--kind", "preset", "--json"])
    assert result.exit_code == 1, result.output  # checks failed, as a test run would
    rows = json.loads(result.stdout)
    failed = {r["variant"] for r in rows if r["status"] == "failed"}
    assert failed == {
        "preset:unknown-attention",
        "preset:odd-heads",
        "preset:wrong-count",
        "preset:no-summary",
    }
    assert "internal error" not in result.output


def test_a_builtin_preset_passes_its_checks() -> None:
    system = load_plugins(only=["vit"], strict=True, quiet=True)
    (variant,) = [v for v in variants("vit", "preset", system=system) if v.name == "vit-ti16"]
    names = [c.__name__ for c in yield_checks(variant)]
    assert names == [
        "check_preset_registration",
        "check_preset_validates",
        "check_preset_spec_roundtrip",
        "check_preset_trial_build",
    ]
    results = check_variant(variant)
    assert {r.status for r in results} == {"passed"}
