"""The trainer's default objective belongs to the core: no plugin is needed to train a classifier.

``supervised`` is registered by the core plugin itself (see ``vitzoo.core_plugin``),
so a spec without an ``objective:`` section builds and trains with the built-in ``objectives``
plugin disabled.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from training_helpers import TINY_SPEC, make_dataset

from vitzoo.objectives import build_objective
from vitzoo.objectives.supervised import SupervisedObjective
from vitzoo.plugins import load_plugins
from vitzoo.training.trainer import train


@pytest.fixture(autouse=True)
def _one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


def test_spec_without_objective_trains_with_the_objectives_plugin_disabled(tmp_path: Path) -> None:
    system = load_plugins(disable=["objectives"], strict=True)
    assert system.records["objectives"].status == "disabled"
    assert system.registry.names("objective") == ["supervised"]
    assert system.registry.get("objective", "supervised").plugin == "core"

    # 2 classes x 4 images with batch 8: one optimiser step per epoch
    data = make_dataset(tmp_path / "data", per_class=4, val_per_class=2, odd_formats=False)
    result = train(TINY_SPEC, data, epochs=1, out=tmp_path / "run", system=system)

    assert isinstance(build_objective(None, result.model, system=system), SupervisedObjective)
    assert len(result.history) == 1
    assert math.isfinite(result.final["train_loss"])
