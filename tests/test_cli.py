"""The command line, run as a user runs it (a subprocess where the environment matters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from click.testing import CliRunner

from vitzoo.cli import cli

VITZOO = [sys.executable, "-c", "from vitzoo.cli import main; main()"]


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_list_shows_components_architectures_and_presets() -> None:
    result = run("list", "--json")
    rows = json.loads(result.stdout)
    seen = {(r["kind"], r["name"]): r for r in rows}
    for key in [
        ("architecture", "vit"),
        ("architecture", "simple-vit"),
        ("architecture", "deit"),
        ("attention", "mhsa"),
        ("patchifier", "linear"),
        ("head", "distillation"),
        ("preset", "vit-b16"),
    ]:
        assert key in seen
    assert seen[("architecture", "deit")]["plugin"] == "vit"
    assert seen[("attention", "mhsa")]["plugin"] == "core"
    assert seen[("preset", "deit-s")]["params"] == 22050664


def test_build_preset_prints_86_6m_for_vit_b16() -> None:
    result = run("build", "vit-b16", "--no-forward")
    assert result.exit_code == 0 and "86.6M" in result.output


def test_build_with_overrides_json_and_checkpoint(tmp_path) -> None:
    ckpt = tmp_path / "tiny.safetensors"
    result = run(
        "build",
        "vit-ti16",
        "--set",
        "model.image_size=32",
        "--set",
        "model.patch.patch_size=8",
        "--set",
        "model.depth=1",
        "--set",
        "model.num_classes=3",
        "--json",
        "--output",
        str(ckpt),
    )
    info = json.loads(result.stdout)
    assert (
        info["output_shape"] == [1, 3]
        and info["tokens"] == 17
        and info["input_shape"] == [1, 3, 32, 32]
    )
    assert ckpt.is_file()


def test_bad_spec_exits_2_with_file_line_errors(tmp_path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        textwrap.dedent("""
        model:
          type: vit
          image_size: 32
          patch: {type: linear, patch_size: 7}
    """).lstrip()
    )
    proc = subprocess.run([*VITZOO, "build", str(spec)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{spec}:4:") and "model.patch.patch_size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_schema_and_plugins_commands(tmp_path) -> None:
    out = tmp_path / "schema.json"
    run("schema", "-o", str(out))
    assert "mhsa" in out.read_text()
    assert "core" in run("plugins").output


def test_broken_plugin_is_reported_and_cli_still_works(fake_plugins) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(fake_plugins), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [*VITZOO, "list", "--kind", "architecture"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "vit" in proc.stdout
    skipped = [
        line for line in proc.stderr.splitlines() if line.startswith("vitzoo: skipped plugin")
    ]
    assert any("fake-brokenimport" in line for line in skipped)
    proc = subprocess.run([*VITZOO, "plugins", "--json"], capture_output=True, text=True, env=env)
    records = {r["name"]: r for r in json.loads(proc.stdout)}
    assert records["fake-brokenimport"]["status"] == "failed"
    assert records["fake-good"]["status"] == "ok"
