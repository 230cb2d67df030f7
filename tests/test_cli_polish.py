"""What people see: piped output, message grammar, Ctrl-C, the attention overlay."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from training_helpers import TINY_SPEC, make_dataset

from vitzoo.cli import cli
from vitzoo.commands.inspect import attention
from vitzoo.commands.train import train as train_cmd
from vitzoo.testing.runner import CheckResult
from vitzoo.training.state import read_run_checkpoint

VITZOO = [sys.executable, "-c", "from vitzoo.cli import main; main()"]


def test_piped_list_keeps_every_row_on_one_line() -> None:
    result = CliRunner().invoke(cli, ["list", "--kind", "preset"], catch_exceptions=False)
    rows = [line for line in result.output.splitlines() if " vit-b16 " in line]
    assert len(rows) == 1 and "86.6M" in rows[0] and "1000 classes" in rows[0]
    assert max(len(line) for line in result.output.splitlines()) > 100  # not folded at 80


def test_plugin_counts_use_plurals() -> None:
    output = CliRunner().invoke(cli, ["plugins"], catch_exceptions=False).output
    assert "1 architecture" in output or "architectures" in output
    assert " 1 presets" not in output and "presets" in output


def test_check_folds_skipped_slow_checks_into_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [
        CheckResult(f"architecture:v{i}", "check_compiles", "skipped", "slow check (--slow)")
        for i in range(70)
    ]
    fake.append(CheckResult("architecture:v0", "check_shapes", "passed"))
    monkeypatch.setattr("vitzoo.testing.runner.run_checks", lambda *a, **k: fake)
    result = CliRunner().invoke(cli, ["check"])
    lines = result.output.strip().splitlines()
    assert lines == [
        "skipped check_compiles on 70 variants (slow; --slow runs it)",
        "1 passed, 70 skipped",
    ]
    as_json = CliRunner().invoke(cli, ["check", "--json"])
    assert len(json.loads(as_json.stdout)) == 71


def test_attention_overlay_is_readable_and_warns_on_untrained_weights(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY_SPEC))
    image = tmp_path / "digit.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    out = tmp_path / "overlay.png"
    result = CliRunner().invoke(attention, [str(spec), str(image), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "untrained" in result.output
    with Image.open(out) as overlay:
        assert overlay.size[1] >= 384 and overlay.size[0] > overlay.size[1]  # + colour bar


def test_ctrl_c_saves_the_last_step_and_prints_the_resume_command(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=8)
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY_SPEC))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", str(spec), "--data", str(data), "--out", str(run), "--epochs", "300"]
    proc = subprocess.Popen([*VITZOO, *args], stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if " step 1/2 " in line and "epoch 2/" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "interrupted;" in rest and "Aborted" not in rest and "Traceback" not in rest
    command = rest.split("continue with:", 1)[1].strip().splitlines()[0]
    assert command == shlex.join(["vitzoo", *args, "--resume"])
    _, _, state = read_run_checkpoint(run)
    assert state.step >= 3
    resumed = shlex.split(command)[2:]
    resumed[resumed.index("--epochs") + 1] = str(state.epoch + 1)
    finished = CliRunner().invoke(train_cmd, resumed)
    assert finished.exit_code == 0, finished.output
    assert "resuming" in finished.output
