"""The dense-prediction example: a vitzoo features_only backbone + per-pixel head learns."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "dense_prediction.py"


def load_example():
    spec = importlib.util.spec_from_file_location("dense_prediction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("arch", ["twins-svt", "vit"])
def test_segmenter_loss_falls(arch: str) -> None:
    example = load_example()
    torch.manual_seed(0)
    model = example.build_segmenter(arch)
    images, labels = example.make_shapes(2)
    assert model(images).shape == (2, example.NUM_CLASSES, 32, 32)
    assert 0 < int(labels.max()) < example.NUM_CLASSES  # shapes are there, classes in range
    losses = example.train(model, steps=20)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses
