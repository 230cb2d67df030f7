"""Issue 20, the spec layer: traps a new user hit reading and writing specs.

* item 1: ``3e-4`` is a number everywhere a spec is read (files, ``--set``, stored specs);
* item 8: no ``<spec>  <root>:`` placeholders, no list of every preset after a did-you-mean;
* item 2 (the part users see): a broken preset's problem names the preset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import vitzoo
from vitzoo.cli import cli
from vitzoo.errors import SpecError, SpecIssue
from vitzoo.plugins import PluginSystem, load_plugins, register_plugin
from vitzoo.spec import load_yaml, parse_assignments, spec_to_yaml

TINY = {
    "type": "vit",
    "image_size": 16,
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "num_classes": 3,
    "patch": {"type": "linear", "patch_size": 8},
}


# -- item 1: YAML 1.1 read 3e-4 as a string ---------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [("3e-4", 3e-4), ("1E5", 1e5), ("1.0e5", 1e5), ("-2e+3", -2e3), (".5e-3", 5e-4)],
)
def test_exponent_floats_are_numbers(text: str, value: float) -> None:
    assert load_yaml(text) == value
    assert parse_assignments([f"train.lr={text}"]) == {"train.lr": value}


def test_other_scalars_read_as_before() -> None:
    assert load_yaml("[12, 0x10, 1_000, abc, 1e, e5, 3.0e-4, .inf]") == [
        12,
        16,
        1000,
        "abc",
        "1e",
        "e5",
        3e-4,
        float("inf"),
    ]


def test_lr_3e_4_in_a_spec_file_and_in_set(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "model:\n"
        + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in TINY.items())
        + "train:\n  lr: 3e-4\n  min_lr: 1e-6\n"
    )
    spec = vitzoo.resolve_spec(path)
    assert (spec.train.lr, spec.train.min_lr) == (3e-4, 1e-6)
    # the README's own command line
    result = CliRunner().invoke(cli, ["build", str(path), "--set", "train.lr=5e-4", "--json"])
    assert result.exit_code == 0, result.output
    # and the spec written back loads equal
    assert vitzoo.resolve_spec(load_yaml(spec_to_yaml(spec))) == spec


def test_a_quoted_number_says_to_drop_the_quotes() -> None:
    with pytest.raises(SpecError, match="without quotes"):
        vitzoo.resolve_spec({"model": TINY, "train": {"lr": "3e-4"}})


# -- item 8: placeholders and the wall of preset names ----------------------------------------
def test_no_placeholders_in_front_of_a_message() -> None:
    assert str(SpecIssue("", "no such thing")) == "no such thing"
    assert str(SpecIssue("model.dim", "too big")) == "model.dim: too big"
    assert (
        str(SpecIssue("model.dim", "too big", "a.yaml", 3, 5)) == "a.yaml:3:5  model.dim: too big"
    )
    with pytest.raises(SpecError) as info:
        vitzoo.resolve_spec("vit-s17")
    text = str(info.value)
    assert "<spec>" not in text and "<root>" not in text
    assert "did you mean 'vit-s16'?" in text


@pytest.mark.parametrize("where", ["file", "mapping"])
def test_unknown_preset_suggests_without_listing_every_preset(tmp_path: Path, where: str) -> None:
    source: object = {"preset": "vit-s17", "model": {"num_classes": 3}}
    if where == "file":
        source = tmp_path / "spec.yaml"
        source.write_text("preset: vit-s17\n")
    with pytest.raises(SpecError) as info:
        vitzoo.resolve_spec(source)
    text = str(info.value)
    assert "did you mean 'vit-s16'?" in text and "vitzoo list --kind preset" in text
    assert "cait-xxs24" not in text and len(text) < 300, text


def test_a_weights_file_as_preset_says_how_to_start_from_weights() -> None:
    with pytest.raises(SpecError) as info:
        vitzoo.resolve_spec({"preset": "runs/x/best.safetensors"})
    text = str(info.value)
    assert "train.init_from: runs/x/best.safetensors" in text and "unknown preset" not in text


def test_registry_lookup_of_an_unknown_preset_is_short() -> None:
    with pytest.raises(KeyError) as info:
        vitzoo.get_registry().get("preset", "vit-s17")
    assert "vit-s16" in str(info.value) and "cait-xxs24" not in str(info.value)


# -- item 2: a broken preset names itself -----------------------------------------------------
class _BrokenPresets:
    @vitzoo.hookimpl
    def register_presets(self, register):  # noqa: ANN001 - the hook's register callback
        register("odd-heads", {"model": {**TINY, "dim": 192, "num_heads": 5}}, summary="bad")


def _system_with_broken_preset() -> PluginSystem:
    system = load_plugins(strict=True)
    register_plugin(system, _BrokenPresets(), "broken-presets")
    return system


def test_a_preset_problem_is_located_at_the_preset(tmp_path: Path) -> None:
    system = _system_with_broken_preset()
    with pytest.raises(SpecError) as info:
        vitzoo.resolve_spec("odd-heads", system=system)
    assert str(info.value).startswith("preset 'odd-heads'  model.num_heads:"), str(info.value)
    # a file starting from it: the preset's field is the preset's, the file's own field the file's
    path = tmp_path / "spec.yaml"
    path.write_text("preset: odd-heads\nmodel:\n  depth: 0\n")
    with pytest.raises(SpecError) as info:
        vitzoo.resolve_spec(path, system=system)
    lines = str(info.value).splitlines()
    assert any(line.startswith("preset 'odd-heads'  model.num_heads") for line in lines), lines
    assert any(line.startswith(f"{path}:3:3  model.depth") for line in lines), lines


def test_a_preset_with_an_objective_beside_it_goes_through_the_whole_spec_rules() -> None:
    """Only vitzoo's own presets, alone (at most train overrides), skip the rules and the trial:
    BEiT's relative position bias cannot take MAE's token subset, refused at spec time."""
    with pytest.raises(SpecError, match="rel-pos' needs every patch token") as caught:
        vitzoo.resolve_spec({"preset": "beit-b16", "objective": {"type": "mae"}})
    assert str(caught.value).startswith("preset 'beit-b16'")


def test_a_third_party_preset_is_checked_and_named_on_a_whole_spec_rule() -> None:
    @vitzoo.hookimpl
    def register_presets(register):  # noqa: ANN001, ANN202
        model = {"type": "vit", "image_size": 32, "num_classes": 2, "dim": 32, "depth": 1}
        model |= {"num_heads": 2, "patch": {"type": "linear", "patch_size": 8}}
        spec = {"model": {**model, "attention": {"type": "rope"}}, "objective": {"type": "mae"}}
        register("vit-mae-rope", spec, citation="test", expected_params=1)

    plugin = type("Plugin", (), {"register_presets": staticmethod(register_presets)})
    system = load_plugins(extra=[("third", plugin)])
    with pytest.raises(SpecError) as caught:
        vitzoo.build("vit-mae-rope", system=system)
    message = str(caught.value)
    assert message.startswith("preset 'vit-mae-rope'") and "'rope' needs every patch" in message
