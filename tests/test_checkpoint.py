"""Checkpoints rebuild themselves from the spec in their metadata; bad files fail clearly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import vitzoo
from vitzoo.checkpoint import CheckpointError

TINY = {
    "image_size": 32,
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "num_classes": 4,
    "model.patch.patch_size": 8,
}


def test_round_trip_rebuilds_same_model(tmp_path) -> None:
    model = vitzoo.build("deit-ti-distilled", **TINY).eval()
    path = vitzoo.save(model, tmp_path / "m.safetensors")
    loaded = vitzoo.load(path).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), loaded(x))
    assert loaded.vitzoo_spec == model.vitzoo_spec


def test_reset_classifier_is_remembered(tmp_path) -> None:
    model = vitzoo.build("vit-ti16", **TINY)
    model.reset_classifier(9)
    loaded = vitzoo.load(vitzoo.save(model, tmp_path / "m.safetensors"))
    assert loaded.num_classes == 9


def test_corrupt_missing_and_foreign_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        vitzoo.load(tmp_path / "absent.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        vitzoo.load(corrupt)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="has no 'vitzoo.spec' metadata"):
        vitzoo.load(foreign)


def test_mismatched_weights_are_named(tmp_path) -> None:
    model = vitzoo.build("vit-ti16", **TINY)
    path = vitzoo.save(model, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["head.fc.weight"] = torch.zeros(3, 3)
    del tensors["norm.bias"]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"missing \['norm.bias'\]"):
        vitzoo.load(path)
