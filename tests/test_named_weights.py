"""Named released weights: tags in the catalogue, resolved through a real Hugging Face cache.

The cache is laid out on disk exactly as ``huggingface_hub`` writes it
(``models--ORG--NAME/{blobs,snapshots/REV,refs/main}``) with a tiny perturbed timm ViT (the
``timm-vit`` reference fixture) in timm's hub-folder form (``config.json`` + ``model.safetensors``);
``huggingface_hub`` itself finds it under ``HF_HUB_OFFLINE=1``; a tiny DINOv2 (the
``timm-dinov2`` fixture) likewise, so a family with its own converter and resampled positions
goes the same way. Nothing is mocked, nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from fidelity import assert_matches_fixture
from reference_data import load_reference
from resampling_helpers import at_two_sizes
from safetensors.torch import save_file
from test_weights_timm import vit_spec

import vitzoo
from vitzoo.cli import cli
from vitzoo.errors import WeightsError
from vitzoo.plugins import set_plugin_system

pytest.importorskip("huggingface_hub")

FIXTURE = load_reference("timm-vit")
META = FIXTURE.meta
REPO = "vitzoo-test/tiny_tagged_vit.test_in1k"
HEADLESS = "vitzoo-test/tiny_tagged_vit.headless"
ABSENT = "vitzoo-test/tiny_tagged_vit.absent"
INCEPTION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 0.9}
DINOV2 = load_reference("timm-dinov2")
DINOV2_REPO = "vitzoo-test/tiny_dinov2.lvd142m_test"


@vitzoo.hookimpl
def register_presets(register):  # noqa: ANN001, ANN202
    spec = vit_spec(META)
    weights = {
        "test-in1k": {
            "hub": REPO,
            "default": True,
            "licence": "apache-2.0",
            "dataset": "made by the test",
            "top1": 12.5,
            "preprocessing": INCEPTION,
        },
        "headless": {"hub": HEADLESS, "num_classes": 0, "dataset": "the same, no head"},
        "absent": {"hub": ABSENT},
    }
    register(
        "tiny-tagged",
        spec,
        citation="test",
        expected_params=1,
        released={"timm": "tiny_tagged_vit"},
        weights=weights,
    )
    register(
        "tiny-dinov2",
        vit_spec(DINOV2.meta, "dinov2"),
        citation="test",
        expected_params=1,
        released={"timm": "tiny_dinov2"},
        weights={"lvd142m-test": {"hub": DINOV2_REPO, "default": True}},
    )


def write_cache_entry(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """One repository in the Hugging Face cache layout: content-addressed blobs, a snapshot of
    symlinks under a commit hash, and ``refs/main`` naming that commit."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / revision
    (folder / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    return snapshot


def timm_hub_files(
    state: dict[str, torch.Tensor],
    num_classes: int,
    tmp: Path,
    meta: dict = META,
    architecture: str = "tiny_tagged_vit",
) -> dict:
    weights = tmp / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    config = {
        "architecture": architecture,
        "num_classes": num_classes,
        "pretrained_cfg": {
            **INCEPTION,
            "interpolation": "bicubic",
            "input_size": [3, meta["img_size"], meta["img_size"]],
            "num_classes": num_classes,
        },
    }
    return {"config.json": json.dumps(config).encode(), "model.safetensors": weights.read_bytes()}


@pytest.fixture(scope="module")
def system():
    plugin = SimpleNamespace(register_presets=register_presets)
    made = vitzoo.load_plugins(only=["vit", "dinov2"], strict=True, extra=[("tagged", plugin)])
    previous = set_plugin_system(made)
    yield made
    set_plugin_system(previous)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hub"
    write_cache_entry(root, REPO, timm_hub_files(FIXTURE.state_dict, 5, tmp_path))
    headless = {k: v for k, v in FIXTURE.state_dict.items() if not k.startswith("head.")}
    write_cache_entry(root, HEADLESS, timm_hub_files(headless, 0, tmp_path))
    dinov2 = timm_hub_files(DINOV2.state_dict, 5, tmp_path, DINOV2.meta, "tiny_dinov2")
    write_cache_entry(root, DINOV2_REPO, dinov2)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_named_tag_loads_from_the_local_cache_and_computes_the_reference(system, cache) -> None:
    model = vitzoo.build("tiny-tagged.test-in1k", system=system).eval()
    assert_matches_fixture(model, FIXTURE)
    pre = model.vitzoo_preprocessing
    assert pre.mean == (0.5, 0.5, 0.5) and pre.crop_fraction == 0.9


def test_pretrained_true_takes_the_default_tag_and_timm_spelling_works(system, cache) -> None:
    by_default = vitzoo.build("tiny-tagged", pretrained=True, system=system).eval()
    timm_style = vitzoo.build("tiny_tagged_vit.test_in1k", system=system).eval()
    x = FIXTURE.input
    with torch.no_grad():
        assert torch.equal(by_default(x), timm_style(x))
    assert_matches_fixture(by_default, FIXTURE, dtypes=(torch.float32,))


def test_a_headless_release_builds_without_a_head_and_overrides_adapt(system, cache) -> None:
    features = vitzoo.build("tiny-tagged.headless", system=system).eval()
    assert features.num_classes == 0
    with torch.no_grad():
        assert features(FIXTURE.input).shape == (2, META["embed_dim"])
    two = vitzoo.build("tiny-tagged.test-in1k", num_classes=2, system=system)
    assert two.num_classes == 2  # a fresh 2-class head on the released backbone


def test_a_dinov2_tag_in_timms_spelling_computes_timms_model_at_two_sizes(system, cache) -> None:
    """Another family's converter (timm's DINOv2 layout) and its position resampling behind the
    same named path: ``tiny_dinov2.lvd142m_test`` is timm's spelling of tiny-dinov2's tag."""
    model = vitzoo.build("tiny_dinov2.lvd142m_test", system=system).eval()
    assert model.vitzoo_spec.model.type == "dinov2"
    assert_matches_fixture(model, DINOV2, at_two_sizes(tuple(DINOV2.meta["second_size"])))


def test_unknown_tag_suggests_the_nearest(system) -> None:
    with pytest.raises(
        WeightsError, match=r"no weights tagged 'test-in1' \(did you mean 'test-in1k'"
    ):
        vitzoo.build("tiny-tagged.test-in1", system=system)


def test_a_tag_absent_offline_names_the_repo_and_the_fetch_command(system, cache) -> None:
    with pytest.raises(WeightsError) as caught:
        vitzoo.build("tiny-tagged.absent", system=system)
    message = str(caught.value)
    assert "\n" not in message and ABSENT in message
    assert "vitzoo weights tiny-tagged.absent --download" in message


def test_cli_absent_and_unknown_tags_are_one_line_exit_2(system, cache) -> None:
    for name, expected in (
        ("tiny-tagged.absent", "vitzoo weights tiny-tagged.absent --download"),
        ("tiny-tagged.nope", "no weights tagged 'nope'"),
    ):
        result = CliRunner().invoke(cli, ["weights", name, "--load"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], result.output


def test_cli_weights_lists_tags_with_their_facts_and_cache_state(system, cache) -> None:
    result = CliRunner().invoke(cli, ["weights", "tiny-tagged", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["tag"]: r for r in json.loads(result.output)}
    assert rows["test-in1k"]["default"] and rows["test-in1k"]["top1"] == 12.5
    assert rows["test-in1k"]["hub"] == REPO and rows["test-in1k"]["cached"]
    assert not rows["absent"]["cached"]
    assert rows["test-in1k"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    loaded = CliRunner().invoke(cli, ["weights", "tiny-tagged.test-in1k", "--load"])
    assert loaded.exit_code == 0, loaded.output
    assert "tiny-tagged.test-in1k" in loaded.output


def test_cli_build_takes_a_tag(system, cache, tmp_path: Path) -> None:
    out = tmp_path / "tagged.safetensors"
    result = CliRunner().invoke(cli, ["build", "tiny-tagged.test-in1k", "--output", str(out)])
    assert result.exit_code == 0, result.output
    model = vitzoo.load(out).eval()
    assert_matches_fixture(model, FIXTURE, dtypes=(torch.float32,))


def test_train_init_from_a_tag_fine_tunes_the_release(system, cache, tmp_path: Path) -> None:
    """``train.init_from: PRESET.TAG`` starts from the release (head reset for the data's
    classes, its preprocessing adopted)."""
    from training_helpers import make_dataset

    from vitzoo.training.trainer import train

    data = make_dataset(tmp_path / "data", per_class=4, val_per_class=2, odd_formats=False)
    spec = {
        "preset": "tiny-tagged",
        "train": {"epochs": 1, "batch_size": 4, "init_from": "tiny-tagged.test-in1k"},
    }
    run = train(spec, data, out=tmp_path / "run", system=system)
    assert run.model.num_classes == 2
    assert tuple(run.model.vitzoo_spec.data.mean) == (0.5, 0.5, 0.5)


def test_cli_list_pretrained_shows_only_presets_with_tags(system) -> None:
    result = CliRunner().invoke(cli, ["list", "--pretrained", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    names = {r["name"] for r in rows}
    assert "tiny-tagged.test-in1k" in names and "tiny-tagged.headless" in names
    assert all("." in n for n in names)


# -- the built-in catalogue ---------------------------------------------------------------------
def test_vit_and_deit_presets_carry_timms_tags() -> None:
    registry = vitzoo.get_registry()
    vit_s16 = registry.get("preset", "vit-s16")
    default = vit_s16.default_weights
    assert default.tag == "augreg-in21k-ft-in1k"
    assert default.hub == "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
    assert default.top1 == pytest.approx(81.402) and default.licence == "apache-2.0"
    assert default.preprocessing["mean"] == [0.5, 0.5, 0.5]
    assert vit_s16.weight_tag("augreg_in21k").num_classes == 21843
    for name in ("vit-ti16", "vit-b16", "vit-b32", "vit-l16", "deit-ti", "deit-s", "deit-b"):
        assert registry.get("preset", name).default_weights is not None, name
    assert (
        registry.get("preset", "deit-s").default_weights.hub
        == "timm/deit_small_patch16_224.fb_in1k"
    )
    split = registry.split_weights_name("vit_small_patch16_224.augreg_in21k_ft_in1k")
    assert split is not None and split[0].name == "vit-s16"


def test_the_families_people_fine_tune_carry_timms_tags() -> None:
    """DINOv2, DeiT III, CLIP/SigLIP, EVA-02, BEiT, Swin and AIMv2 presets name their timm
    releases (tools/make_weight_tags.py): every such preset has a default tag whose repository
    is timm's hub folder of one of its released names, and weights trained with QuickGELU are
    tags of the -quickgelu towers only (timm lists OpenAI's under the GELU tower too)."""
    families = {"dinov2", "deit3", "clip", "eva", "beit", "swin", "aimv2"}
    registry = vitzoo.load_plugins(only=sorted(families), strict=True).registry
    entries = [registry.get("preset", n) for n in registry.names("preset")]
    tagged = [e for e in entries if e.plugin in families and e.weights]
    assert len(tagged) >= 90
    for entry in tagged:
        assert entry.default_weights is not None, entry.name
        for tag in entry.weights:
            repo, _, timm_tag = tag.hub.removeprefix("timm/").partition(".")
            assert timm_tag.replace("_", "-") == tag.tag, tag.hub
            names = {r.name for r in entry.released if r.source == "timm"}
            names |= {n.replace("_quickgelu", "") for n in names}
            assert repo in names, (entry.name, tag.hub)
    dinov2 = registry.split_weights_name("vit_small_patch14_reg4_dinov2.lvd142m")
    assert dinov2 is not None and dinov2[0].name == "dinov2-s-reg4"
    assert dinov2[1] == "lvd142m" and dinov2[0].default_weights.num_classes is None
    assert registry.get("preset", "clip-b16").weight_tag("openai") is None
    openai = registry.get("preset", "clip-b16-quickgelu").weight_tag("openai")
    assert openai.hub == "timm/vit_base_patch16_clip_224.openai"
    swin = registry.get("preset", "swin-t").weight_tag("ms_in22k")
    assert swin.num_classes == 21841
    beit = registry.get("preset", "beit-b16").default_weights
    assert beit.top1 is not None and beit.top1_source == "timm results-imagenet.csv"


def test_a_failed_download_names_the_command_that_brings_the_weights_in(
    system, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online mode, nothing cached, the download fails (no network here, and the test must not
    reach it): one line saying why and how to fetch elsewhere. The download itself is replaced
    by its failure; the cache look-up before it is the real one."""
    from vitzoo.weights import named

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(weights):  # noqa: ANN001, ANN202
        raise WeightsError(f"{weights.name}: could not download {weights.tag.hub} (no network)")

    monkeypatch.setattr(named, "download", no_network)
    with pytest.raises(WeightsError) as caught:
        vitzoo.build("tiny-tagged.test-in1k", system=system)
    message = str(caught.value)
    assert "\n" not in message and "(no network)" in message
    assert "vitzoo weights tiny-tagged.test-in1k --download" in message
