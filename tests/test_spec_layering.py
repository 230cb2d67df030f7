"""The spec layer stands on its own, and ``--set`` means the same in every command.

The trainer reads specs; it does not define them. If importing :mod:`vitzoo.spec` pulled in
:mod:`vitzoo.training` again, the two would form an import cycle and every spec validation
would load the trainer.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import vitzoo.spec
import vitzoo.training
from vitzoo.cli import cli
from vitzoo.commands.train import train as train_cmd
from vitzoo.spec import OverrideSyntaxError, parse_assignments


def test_importing_the_spec_does_not_import_the_trainer() -> None:
    code = (
        "import vitzoo.spec, sys; "
        "loaded = [m for m in sys.modules if m.startswith('vitzoo.training')]; "
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


def test_the_training_names_are_the_spec_sections() -> None:
    """``vitzoo.training.TrainConfig`` is the spec's section, not a copy."""
    assert vitzoo.training.TrainConfig is vitzoo.spec.TrainConfig


def test_assignments_parse_as_yaml_values() -> None:
    parsed = parse_assignments(["model.dim=384", "train.lr=0.5", "patch_size=[8, 16]", "x="])
    assert parsed == {"model.dim": 384, "train.lr": 0.5, "patch_size": [8, 16], "x": None}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("model.dim", "expected key=value"),
        ("=3", "expected key=value"),
        ("model.dim=[1,", "cannot read the value of 'model.dim=[1,'"),
    ],
)
def test_a_malformed_assignment_is_named(item: str, message: str) -> None:
    with pytest.raises(OverrideSyntaxError, match=message.replace("[", r"\[")):
        parse_assignments([item])


@pytest.mark.parametrize("item", ["model.dim", "model.dim=[1,"])
def test_build_and_train_reject_a_malformed_set_alike(item: str, tmp_path) -> None:
    """A usage error (exit 2, no traceback), before anything is built or read."""
    build = CliRunner().invoke(cli, ["build", "vit-ti16", "--set", item, "--no-forward"])
    train = CliRunner().invoke(train_cmd, ["vit-ti16", "--data", str(tmp_path), "--set", item])
    for result in (build, train):
        assert result.exit_code == 2, result.output
        assert "Invalid value for --set" in result.output
        assert "Traceback" not in result.output
