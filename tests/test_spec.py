"""Specs: file:line errors naming the spec path, presets with overrides, exact round trips."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

import vitzoo
from vitzoo.spec import SpecError, deep_merge, spec_to_yaml, validate_spec

TINY = {
    "type": "vit",
    "image_size": 32,
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "num_classes": 3,
    "patch": {"type": "linear", "patch_size": 8},
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def issues_of(source) -> list[str]:
    with pytest.raises(SpecError) as info:
        vitzoo.resolve_spec(source)
    return [str(i) for i in info.value.issues]


def test_typo_and_wrong_type_reported_at_their_lines(tmp_path) -> None:
    path = write(
        tmp_path,
        """
        model:
          type: vit
          image_size: 32
          dimm: 32
          depth: three
          attention: {type: not-an-attention}
        """,
    )
    issues = issues_of(path)
    assert f"{path}:4:3  model.dimm: unknown field" in issues[0] or any(
        i.startswith(f"{path}:4:3  model.dimm") for i in issues
    )
    assert any(i.startswith(f"{path}:5:3  model.depth:") and "integer" in i for i in issues)
    assert any(
        i.startswith(f"{path}:6:") and "model.attention.type" in i and "'mhsa'" in i for i in issues
    )
    assert len(issues) == 3  # all errors at once


def test_cross_field_rule_points_at_the_field(tmp_path) -> None:
    path = write(
        tmp_path,
        """
        model:
          type: vit
          image_size: 32
          patch:
            type: linear
            patch_size: 5
        """,
    )
    (issue,) = issues_of(path)
    assert issue.startswith(
        f"{path}:6:5  model.patch.patch_size: patch size 5 does not divide image size 32"
    )
    assert "allowed for this image size: [1, 2, 4, 8, 16, 32]" in issue


def test_heads_must_divide_dim() -> None:
    (issue,) = issues_of({"model": {**TINY, "num_heads": 3}})
    assert "model.num_heads: num_heads=3 does not divide dim=32" in issue


def test_unknown_architecture_lists_choices() -> None:
    (issue,) = issues_of({"model": {"type": "nope"}})
    assert "model.type: unknown type 'nope'; allowed:" in issue and "'vit'" in issue


def test_invalid_yaml_reports_position(tmp_path) -> None:
    path = write(tmp_path, "model:\n  type: vit\n   dim: 3\n")
    (issue,) = issues_of(path)
    assert issue.startswith(f"{path}:3:") and "invalid YAML" in issue


def test_preset_with_overrides_and_type_change() -> None:
    spec = vitzoo.resolve_spec(
        {"preset": "vit-s16", "model": {"num_classes": 10, "pool": {"type": "mean"}}}
    )
    assert spec.model.dim == 384 and spec.model.num_classes == 10 and spec.model.pool.type == "mean"
    assert spec.preset == "vit-s16"
    # a component whose type changes is replaced, not merged with the old type's options
    merged = deep_merge({"a": {"type": "x", "only_x": 1}}, {"a": {"type": "y"}})
    assert merged == {"a": {"type": "y"}}


def test_build_overrides_by_keyword_and_dotted_path() -> None:
    spec = vitzoo.resolve_spec("deit-ti", {"num_classes": 5, "model.patch.patch_size": 32})
    assert spec.model.num_classes == 5 and spec.model.patch.patch_size == 32


def test_unknown_preset_or_missing_file() -> None:
    (issue,) = issues_of("no-such-preset")
    assert "neither a spec file nor a registered preset" in issue
    assert "`vitzoo list --kind preset`" in issue and "vit-b16" not in issue  # no 116-name dump
    (issue,) = issues_of("vit-b61")
    assert "did you mean 'vit-b16'?" in issue
    (issue,) = issues_of("missing.yaml")
    assert "cannot read spec file" in issue


@pytest.mark.parametrize("preset", ["vit-s16", "deit-b-distilled", "simple-vit-s16"])
def test_spec_yaml_round_trip_is_exact(preset) -> None:
    registry = vitzoo.get_registry()
    spec = vitzoo.resolve_spec(preset)
    again = validate_spec(registry, yaml.safe_load(spec_to_yaml(spec)))
    assert again == spec
    assert spec_to_yaml(again) == spec_to_yaml(spec)


def test_components_resolve_to_registered_config_classes() -> None:
    spec = vitzoo.resolve_spec({"model": TINY})
    from vitzoo.components.attention import MhsaConfig

    assert isinstance(spec.model.attention, MhsaConfig)


def test_schema_lists_registered_types() -> None:
    from vitzoo.spec import spec_model

    text = str(spec_model(vitzoo.get_registry()).model_json_schema())
    for name in ("'vit'", "'deit'", "'simple-vit'", "'mhsa'", "'sincos'", "'distillation'"):
        assert name in text
