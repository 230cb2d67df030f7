"""Finding things: preset aliases (timm names), `vitzoo list PATTERN`, did-you-mean, GMACs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import vitzoo
from vitzoo.cli import cli
from vitzoo.flops import count_macs
from vitzoo.plugins import PluginLoadError, load_plugins
from vitzoo.spec import SpecError

TINY_SPEC = {"model": {"type": "vit", "image_size": 32, "dim": 32, "depth": 1, "num_heads": 2}}


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def preset_plugin(name: str, preset: str, aliases: list[str]) -> object:
    @vitzoo.hookimpl
    def register_presets(register):  # noqa: ANN001, ANN202
        register(preset, TINY_SPEC, citation="test", expected_params=1, aliases=aliases)

    return SimpleNamespace(__name__=name, register_presets=register_presets)


# -- aliases ---------------------------------------------------------------------------------
def test_timm_names_resolve_in_the_python_api() -> None:
    registry = vitzoo.get_registry()
    assert registry.get("preset", "vit_small_patch16_224").name == "vit-s16"
    assert registry.aliases()["xcit_small_12_p16_224"] == "xcit-s12"
    assert registry.aliases()["deepvit-16b"] == "deepvit-16"  # the old names keep working
    with torch.device("meta"):
        model = vitzoo.build("vit_small_patch16_224", num_classes=10)
    assert model.vitzoo_spec.model.dim == 384 and model.num_classes == 10


def test_alias_owned_twice_is_a_registration_error_naming_both_plugins() -> None:
    with pytest.raises(PluginLoadError) as caught:
        load_plugins(
            entrypoints=False,
            strict=True,
            extra=[
                ("first", preset_plugin("first", "tiny-a", ["shared_name"])),
                ("second", preset_plugin("second", "tiny-b", ["shared_name"])),
            ],
        )
    message = str(caught.value)
    assert "'shared_name'" in message and "'first'" in message and "'second'" in message


def test_alias_may_not_shadow_a_preset_and_a_failed_plugin_leaves_no_alias() -> None:
    system = load_plugins(
        entrypoints=False,
        quiet=True,
        extra=[
            ("first", preset_plugin("first", "tiny-a", ["tiny_a"])),
            ("second", preset_plugin("second", "tiny-b", ["tiny-a", "tiny_b"])),
        ],
    )
    assert system.records["second"].status == "failed"
    assert "'first'" in system.records["second"].error
    assert system.registry.aliases() == {"tiny_a": "tiny-a"}  # second rolled back whole


# -- did you mean ----------------------------------------------------------------------------
def test_mistyped_preset_suggests_the_closest_in_api_and_cli() -> None:
    with pytest.raises(SpecError, match="did you mean 'cait-xxs24'"):
        vitzoo.resolve_spec("cait-xxs42")
    with pytest.raises(KeyError, match="did you mean 'deit-s'"):
        vitzoo.get_registry().get("preset", "deit-z")
    result = run("build", "vit_small_patch16_244")
    assert result.exit_code == 2 and "did you mean 'vit_small_patch16_224'" in result.output


# -- vitzoo list -----------------------------------------------------------------------------
def test_list_pattern_with_wildcards() -> None:
    rows = json.loads(run("list", "cait-*", "--json").stdout)
    names = {r["name"] for r in rows}
    assert {"cait-xxs24", "cait-xxs36", "cait-m48-448"} <= names
    assert all(n.startswith("cait-") for n in names)
    rows = json.loads(run("list", "xcit-*", "--kind", "preset", "--json").stdout)
    assert [r["name"] for r in rows] == [
        "xcit-m24",
        "xcit-n12",
        "xcit-s12",
        "xcit-s24",
        "xcit-t12",
        "xcit-t24",
    ]
    assert json.loads(run("list", "xcit_small_*", "--json").stdout)[0]["name"] == "xcit-s12"


def test_find_in_the_python_api() -> None:
    registry = vitzoo.get_registry()
    names = [e.name for e in registry.find("twins-pcpvt-*")]
    assert names == ["twins-pcpvt-b", "twins-pcpvt-l", "twins-pcpvt-s"]
    assert [e.name for e in registry.find("XCIT_SMALL_12*", kind="preset")] == ["xcit-s12"]
    assert {e.kind for e in registry.find("re-attention")} == {"attention"}


def test_list_without_match_suggests_and_fails() -> None:
    result = run("list", "ciat-xxs24")
    assert result.exit_code == 1 and "did you mean 'cait-xxs24'" in result.output


def test_list_aliases_and_macs_columns() -> None:
    rows = json.loads(run("list", "--aliases", "--json").stdout)
    assert {"alias": "vit_small_patch16_224", "preset": "vit-s16", "plugin": "vit"} in rows
    result = run("list", "deit-ti", "--kind", "preset", "--macs")
    assert result.exit_code == 0 and "MACs" in result.output and "1.25 G" in result.output


# -- MACs ------------------------------------------------------------------------------------
def test_count_macs_counts_multiply_accumulates() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert count_macs(model, torch.zeros(5, 4)) == 5 * (4 * 3 + 3 * 2)


def test_build_timm_name_prints_params_and_gmacs() -> None:
    result = run("build", "xcit_small_12_p16_224", "--no-forward", "--json")
    info = json.loads(result.stdout)
    assert info["architecture"] == "xcit" and info["params"] == 26253304
    assert 4.6 < info["gmacs"] < 5.0  # the XCiT paper: 4.8 GFLOPs (multiply-accumulates)
    text = run("build", "vit-ti16", "--set", "model.image_size=32", "--no-forward").output
    assert "MMACs (multiply-accumulates)" in text  # a unit that fits, not "0.03 GMACs"


# -- the new architecture options, on tiny models ------------------------------------------------
def test_re_attention_starts_at_the_given_layer() -> None:
    spec = {
        "model": {
            **TINY_SPEC["model"],
            "type": "deepvit",
            "depth": 3,
            "attention": {"type": "re-attention", "transform_from_layer": 2},
        }
    }
    with torch.device("meta"):
        model = vitzoo.build(spec)
    kinds = [type(block.attn).__name__ for block in model.blocks]
    assert kinds == ["MultiHeadAttention", "MultiHeadAttention", "ReAttention"]


def test_build_objective_preset_reports_the_objectives_parameters() -> None:
    args = ["--set", "model.depth=1", "--set", "objective.decoder_depth=1", "--set", "model.dim=96"]
    info = json.loads(run("build", "mae-vit-b16-pretrain", *args, "--no-forward", "--json").stdout)
    assert info["objective"] == "mae"
    assert info["objective_trainable_params"] > info["params"]  # + the decoder


def test_every_released_timm_name_resolves_to_its_preset() -> None:
    """The catalogue's ``released: {timm: ...}`` names are aliases (derived at registration, so
    they cannot disagree with a second list)."""
    registry = vitzoo.get_registry()
    pairs = [
        (preset.name, name)
        for preset in registry.entries("preset")
        for name in preset.released_names("timm")
    ]
    assert len(pairs) >= 60
    for preset, name in pairs:
        assert registry.canonical("preset", name) == preset, (name, preset)
