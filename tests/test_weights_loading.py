"""Loading pretrained weights end to end: formats, bad input, adaptation, CLI, fine-tuning.

Sources are made here: vitzoo checkpoints from tiny models, timm-layout state dicts (the
vitzoo keys renamed to timm's), and random-init Hugging Face folders. Nothing downloads.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import vitzoo
from tests.test_weights import TINY_VIT, timm_named
from tests.training_helpers import make_dataset
from tests.weights_helpers import save_tiny_hf_vit
from vitzoo.weights import WeightsError, load_pretrained

transformers = pytest.importorskip("transformers")


def run_cli(*args: str) -> tuple[int, str]:
    runner = CliRunner()
    result = runner.invoke(_cli(), list(args))
    return result.exit_code, result.output


def _cli():
    from vitzoo.cli import add_builtin_commands, cli

    add_builtin_commands(cli)
    return cli


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory) -> Path:
    """A tiny perturbed HF ViT folder with a processor config and two labelled classes."""
    folder = save_tiny_hf_vit(
        tmp_path_factory.mktemp("hf") / "vit", labels=("cat", "dog"), perturb=True
    )
    processor = {
        "size": {"height": 16, "width": 16},
        "resample": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = vitzoo.build(TINY_VIT).eval()
    path = tmp_path_factory.mktemp("timm") / "vit.pth"
    torch.save(timm_named(model.state_dict()), path)
    return path, model


# -- formats --------------------------------------------------------------------------------
def test_timm_pth_safetensors_and_vitzoo_sources(timm_file, tmp_path):
    path, reference = timm_file
    x = torch.randn(1, 3, 32, 32)
    from_pth = vitzoo.build(TINY_VIT, weights=path).eval()
    st = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in torch.load(path, weights_only=True).items()}, st)
    from_st = vitzoo.build(TINY_VIT, weights=st).eval()
    own = tmp_path / "own.safetensors"
    vitzoo.save(reference, own)
    from_vitzoo = vitzoo.build(weights=own).eval()
    wrapped = tmp_path / "wrapped.pth"  # official checkpoints nest the state dict
    torch.save({"model": torch.load(path, weights_only=True), "epoch": 3}, wrapped)
    from_wrapped = vitzoo.build(TINY_VIT, weights=wrapped).eval()
    with torch.no_grad():
        for model in (from_pth, from_st, from_vitzoo, from_wrapped):
            assert torch.equal(model(x), reference(x))


def test_spec_weights_section(timm_file):
    path, reference = timm_file
    model = vitzoo.build({**TINY_VIT, "weights": {"source": str(path), "format": "timm"}}).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


# -- adaptation -------------------------------------------------------------------------------
def test_adaptations_each_log_one_line(hf_vit):
    from vitzoo.components.posenc import resize_grid_embedding

    lines: list[str] = []
    base = load_pretrained(hf_vit).model
    new = load_pretrained(
        hf_vit, overrides={"num_classes": 5, "image_size": 32, "in_chans": 1}, log=lines.append
    )
    assert len(lines) == 3, lines
    assert "head re-initialised: 2 -> 5" in lines[0]
    assert "(1, 5, 32) -> (1, 17, 32)" in lines[1]
    assert "3 -> 1 channels (summed" in lines[2]
    state, old = new.model.state_dict(), base.state_dict()
    assert state["head.fc.weight"].shape == (5, 32)
    expected = resize_grid_embedding(old["posenc.pos_embed"][:, 1:], (2, 2), (4, 4))
    torch.testing.assert_close(state["posenc.pos_embed"][:, 1:], expected)
    torch.testing.assert_close(state["posenc.pos_embed"][:, :1], old["posenc.pos_embed"][:, :1])
    torch.testing.assert_close(
        state["patch.proj.weight"], old["patch.proj.weight"].sum(1, keepdim=True)
    )
    assert new.preprocessing.class_names is None  # the old labels belong to the old head

    four = load_pretrained(hf_vit, overrides={"in_chans": 4}).model.state_dict()
    w = old["patch.proj.weight"]
    torch.testing.assert_close(four["patch.proj.weight"], torch.cat([w, w[:, :1]], 1) * 3 / 4)


# -- bad input: one line, exit 2 ----------------------------------------------------------------
class Unsafe:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    "case, expected",
    [
        ("truncated", "not a readable safetensors file"),
        ("random", "not a readable safetensors file"),
        ("unsafe", "refused to load"),
        ("other-family", "looks like deit, vit"),
        ("shapes", "shape mismatches"),
        ("offline-hub", "HF_HUB_OFFLINE=1"),
    ],
)
def test_bad_sources_fail_in_one_line(case, expected, timm_file, tmp_path, monkeypatch):
    path, _ = timm_file
    args = ["convert"]
    if case == "truncated":
        good = tmp_path / "good.safetensors"
        vitzoo.save(vitzoo.build(TINY_VIT), good)
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(good.read_bytes()[:500])
        args += [str(bad)]
    elif case == "random":
        bad = tmp_path / "random.safetensors"
        bad.write_bytes(bytes(range(256)) * 4)
        args += [str(bad)]
    elif case == "unsafe":
        bad = tmp_path / "unsafe.pth"
        bad.write_bytes(pickle.dumps({"w": Unsafe()}))
        args += [str(bad), "--preset", "vit-ti16"]
    elif case == "other-family":
        args += [str(path), "--preset", "pit-ti"]
    elif case == "shapes":
        args += [str(path), "--preset", "vit-ti16"]
    elif case == "offline-hub":
        pytest.importorskip("huggingface_hub")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
        args += ["hf-hub:nobody/not-cached-model"]
    code, output = run_cli(*args, "-o", str(tmp_path / "out.safetensors"))
    assert code == 2, output
    assert expected in output
    assert len(output.strip().splitlines()) == 1, output
    assert "Traceback" not in output and "this must never run" not in output


def test_strict_false_loads_what_fits(timm_file):
    path, reference = timm_file
    state = torch.load(path, weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="extra.weight"):
        load_pretrained(_saved(state, path.with_name("extra.pth")), TINY_VIT)
    lines: list[str] = []
    loaded = load_pretrained(path.with_name("extra.pth"), TINY_VIT, strict=False, log=lines.append)
    assert loaded.conversion.unmatched_source == ["extra.weight"]
    assert any("extra.weight" in line for line in lines)


def _saved(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


# -- CLI and fine-tuning --------------------------------------------------------------------------
def test_convert_build_and_finetune_from_hf(hf_vit, tmp_path):
    converted = tmp_path / "vit.safetensors"
    code, output = run_cli("convert", str(hf_vit), "-o", str(converted))
    assert code == 0, output
    from vitzoo.training.inference import load_classifier

    _, classes, data_cfg = load_classifier(converted)
    assert classes == ["cat", "dog"] and data_cfg.mean == (0.5, 0.5, 0.5)
    image = tmp_path / "face.png"
    from PIL import Image

    Image.new("RGB", (20, 20), (200, 120, 90)).save(image)
    code, output = run_cli("attention", str(converted), str(image), "-o", str(tmp_path / "a.png"))
    assert code == 0, output
    code, output = run_cli("build", "-", "--weights", str(hf_vit), "--json")
    assert code == 0, output
    assert json.loads(output[output.index("{") :])["num_classes"] == 2

    data = make_dataset(tmp_path / "faces", classes=("female", "male"), per_class=4)
    spec = tmp_path / "finetune.yaml"
    spec.write_text(
        "model: {type: vit, image_size: 16, num_classes: 2, dim: 32, depth: 1, num_heads: 2,\n"
        "        patch: {type: linear, patch_size: 8}, mlp: {type: mlp, hidden_dim: 48},\n"
        "        norm_eps: 1.0e-12, block: {type: pre-norm, norm_eps: 1.0e-12}}\n"
        f"train: {{init_from: {hf_vit}, epochs: 1, batch_size: 4, lr: 1.0e-4, warmup_epochs: 0}}\n"
    )
    code, output = run_cli("train", str(spec), "--data", str(data), "--out", str(tmp_path / "run"))
    assert code == 0, output
    assert "data normalisation from the weights" in output
    best = tmp_path / "run" / "best.safetensors"
    tuned = vitzoo.load(best)
    assert tuned.vitzoo_spec.data.mean == (0.5, 0.5, 0.5)
    code, output = run_cli("predict", str(best), str(next((data / "val" / "male").glob("*.jpg"))))
    assert code == 0, output


def test_hub_name_resolves_from_the_local_cache_offline(hf_vit, tmp_path, monkeypatch):
    """An hf-hub: source with HF_HUB_OFFLINE=1 is served from the cache, no network."""
    pytest.importorskip("huggingface_hub")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--someone--tiny-vit"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (snapshot / name).write_bytes((hf_vit / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    from_hub = vitzoo.build(weights="hf-hub:someone/tiny-vit").eval()
    local = vitzoo.build(weights=hf_vit).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(from_hub(x), local(x))


def test_timm_preprocessing_from_file_metadata_and_hub_folder(tmp_path):
    """timm's pretrained_cfg travels along: from a file's metadata, or a timm hub folder's
    config.json, whose ``architecture`` also names the preset (via the converter's table)."""
    cfg = {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "crop_pct": 0.9,
        "input_size": [3, 224, 224],
    }
    torch.manual_seed(0)
    reference = vitzoo.build("vit-ti16", num_classes=4).eval()
    state = {k: v.contiguous() for k, v in timm_named(reference.state_dict()).items()}
    single = tmp_path / "vit.safetensors"
    save_file(state, single, metadata={"pretrained_cfg": json.dumps(cfg)})
    loaded = load_pretrained(single, "vit-ti16", overrides={"num_classes": 4})
    assert (
        loaded.preprocessing.mean == (0.5, 0.5, 0.5) and loaded.preprocessing.crop_fraction == 0.9
    )

    folder = tmp_path / "timm-hub"
    folder.mkdir()
    save_file(state, folder / "model.safetensors")
    config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 4,
        "pretrained_cfg": cfg,
        "label_names": ["a", "b", "c", "d"],
    }
    (folder / "config.json").write_text(json.dumps(config))
    hub = load_pretrained(folder)
    assert hub.spec.model.dim == 192 and hub.preprocessing.class_names == ("a", "b", "c", "d")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(hub.model.eval()(x), reference(x))
