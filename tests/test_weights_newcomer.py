"""Issue 20, the weights layer: fine-tuning as a new user tried it.

* item 3: a checkpoint or weights source is usable as the spec; ``train.init_from`` alone
  derives the model (vitzoo checkpoints, Hugging Face folders, timm state dicts by name);
* item 4: head rows follow the class names, not the class order;
* item 7: in Python, every adaptation is a visible ``WeightsAdaptationWarning``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vitzoo
from tests.weights_helpers import save_tiny_hf_vit
from vitzoo.errors import SpecError, WeightsAdaptationWarning, WeightsError
from vitzoo.formats import CLASSES_KEY
from vitzoo.plugins import get_plugin_system
from vitzoo.weights.load import load_pretrained
from vitzoo.weights.source_spec import model_of_source

TINY = {
    "type": "vit",
    "image_size": 16,
    "num_classes": 2,
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "patch": {"type": "linear", "patch_size": 8},
}


def _checkpoint(path: Path, classes: list[str], num_classes: int | None = None) -> Path:
    torch.manual_seed(3)
    model = vitzoo.build({"model": {**TINY, "num_classes": num_classes or len(classes)}})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # every row different from a fresh init
    vitzoo.save(model, path, metadata={CLASSES_KEY: json.dumps(classes)})
    return path


def _head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    state = model.state_dict()
    return state["head.fc.weight"], state["head.fc.bias"]


# -- item 4: classes matched by name ----------------------------------------------------------
def test_same_classes_in_another_order_permute_the_head(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "a.safetensors", ["stripes", "dots"])
    source = vitzoo.load(ckpt)
    lines: list[str] = []
    loaded = load_pretrained(ckpt, class_names=["dots", "stripes"], log=lines.append)
    (w0, b0), (w1, b1) = _head(source), _head(loaded.model)
    torch.testing.assert_close(w1, w0[[1, 0]])  # the labels follow their names
    torch.testing.assert_close(b1, b0[[1, 0]])
    assert lines == [
        "head rows matched by class name: 2 of 2 classes keep their trained head rows "
        "(2 moved to the data's order)"
    ]
    assert loaded.preprocessing.class_names == ("dots", "stripes")
    # everything but the head is the checkpoint's
    mine, theirs = loaded.model.state_dict(), source.state_dict()
    for key in mine:
        if not key.startswith("head"):
            torch.testing.assert_close(mine[key], theirs[key], msg=key)


def test_new_classes_get_fresh_rows_and_shared_ones_keep_theirs(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "a.safetensors", ["stripes", "dots"])
    source = vitzoo.load(ckpt)
    lines: list[str] = []
    loaded = load_pretrained(
        ckpt,
        overrides={"num_classes": 3},
        class_names=["dots", "zebra", "stripes"],
        log=lines.append,
    )
    (w0, _), (w1, _) = _head(source), _head(loaded.model)
    torch.testing.assert_close(w1[0], w0[1])
    torch.testing.assert_close(w1[2], w0[0])
    assert not torch.allclose(w1[1], w0[0]) and not torch.allclose(w1[1], w0[1])
    assert "re-initialised for new 'zebra'" in lines[0]


def test_no_shared_name_means_a_new_head(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "a.safetensors", ["stripes", "dots"])
    lines: list[str] = []
    loaded = load_pretrained(ckpt, class_names=["cat", "dog"], log=lines.append)
    assert not torch.allclose(_head(loaded.model)[0], _head(vitzoo.load(ckpt))[0])
    assert lines[0].startswith("head re-initialised: no class name in common")


def test_unnamed_classes_keep_the_old_behaviour(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "a.safetensors", ["class_0", "class_1"])
    lines: list[str] = []
    loaded = load_pretrained(ckpt, class_names=["dots", "stripes"], log=lines.append)
    torch.testing.assert_close(_head(loaded.model)[0], _head(vitzoo.load(ckpt))[0])
    assert lines == []


# -- item 7: the Python API shows adaptations -------------------------------------------------
def test_adaptations_are_visible_warnings_in_python(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "a.safetensors", ["stripes", "dots"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own default for UserWarning
        vitzoo.build(weights=ckpt, num_classes=3, image_size=32)
    found = [w for w in caught if issubclass(w.category, WeightsAdaptationWarning)]
    messages = [str(w.message) for w in found]
    assert any(m.startswith("head re-initialised: 2 -> 3 classes") for m in messages), messages
    assert any(m.startswith("position tables resampled") for m in messages), messages
    assert {Path(w.filename).name for w in found} == {Path(__file__).name}  # the user's line
    assert issubclass(WeightsAdaptationWarning, UserWarning)


# -- item 3: the weights are the spec ---------------------------------------------------------
def test_a_checkpoint_where_a_spec_goes(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "a.safetensors", ["stripes", "dots"])
    model = vitzoo.build(ckpt)  # used to be "'utf-8' codec can't decode byte 0x80"
    torch.testing.assert_close(_head(model)[0], _head(vitzoo.load(ckpt))[0])
    with pytest.raises(SpecError, match="binary file"):
        vitzoo.resolve_spec(ckpt)  # the spec layer names the problem, never a decode error


def test_model_of_a_checkpoint_and_of_a_timm_file_name(tmp_path: Path) -> None:
    system = get_plugin_system()
    ckpt = _checkpoint(tmp_path / "a.safetensors", ["stripes", "dots"])
    assert model_of_source(ckpt, system)["dim"] == 32
    # a plain state dict named as timm names it: the preset of that alias (metadata only read)
    named = tmp_path / "vit_tiny_patch16_224.augreg_in21k.safetensors"
    save_file({"cls_token": torch.zeros(1, 1, 192)}, str(named))
    model = model_of_source(named, system)
    assert (model["type"], model["dim"], model["depth"]) == ("vit", 192, 12)
    anonymous = tmp_path / "weights.safetensors"
    save_file({"cls_token": torch.zeros(1, 1, 192)}, str(anonymous))
    with pytest.raises(WeightsError, match="preset: NAME"):
        model_of_source(anonymous, system)


def test_hf_folder_gives_the_model_with_its_settings(tmp_path: Path) -> None:
    save_tiny_hf_vit(tmp_path / "hf")
    model = model_of_source(tmp_path / "hf", get_plugin_system())
    assert model["norm_eps"] == 1e-12 and model["block"]["norm_eps"] == 1e-12  # not by hand
