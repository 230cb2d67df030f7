"""The converter machinery: rules, strict accounting, converter selection, registration."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

import vitzoo
from vitzoo.weights import (
    Concat,
    Gather,
    KeepInit,
    Permute,
    Rename,
    Reshape,
    Split,
    Unused,
    WeightsError,
    apply_rules,
    load_state_dict,
)

TINY_VIT = {
    "model": {
        "type": "vit",
        "dim": 32,
        "depth": 2,
        "num_heads": 2,
        "image_size": 32,
        "patch": {"type": "linear", "patch_size": 8},
        "num_classes": 3,
    }
}
# vitzoo name prefix -> timm name prefix (the reverse of the timm-vit converter's renames)
TO_TIMM = {"patch.proj.": "patch_embed.proj.", "posenc.pos_embed": "pos_embed", "head.fc.": "head."}


def timm_named(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    def rename(key: str) -> str:
        for ours, theirs in TO_TIMM.items():
            if key.startswith(ours):
                return theirs + key[len(ours) :]
        return key

    return {rename(k): v.clone() for k, v in state.items()}


def test_timm_vit_keys_load_into_vitzoo_vit():
    torch.manual_seed(0)
    source = vitzoo.build(TINY_VIT).eval()
    target = vitzoo.build(TINY_VIT).eval()
    load_state_dict(target, timm_named(source.state_dict()), source="timm")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(source(x), target(x))


def test_strict_accounting_lists_both_sides_and_shapes():
    model = vitzoo.build(TINY_VIT)
    state = timm_named(model.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["norm.bias"]
    state["head.weight"] = torch.zeros(5, 32)
    with pytest.raises(WeightsError) as err:
        load_state_dict(model, state, source="timm")
    message = str(err.value)
    assert "extra.weight" in message and "norm.bias" in message
    assert "checkpoint (5, 32), model (3, 32)" in message
    # strict=False loads what fits and reports the rest
    report = load_state_dict(model, state, source="timm", strict=False)
    assert report.unmatched_source == ["extra.weight"] and report.missing_target == ["norm.bias"]


def test_rule_vocabulary():
    source = {
        "l.0.q.weight": torch.ones(2, 4),
        "l.0.k.weight": torch.full((2, 4), 2.0),
        "l.0.v.weight": torch.full((2, 4), 3.0),
        "fused": torch.arange(6.0),
        "conv": torch.arange(24.0).reshape(1, 2, 3, 4),
        "order": torch.tensor([10.0, 20.0, 30.0]),
        "buffer": torch.zeros(3),
    }
    shapes = {
        "blocks.0.qkv.weight": (6, 4),
        "a": (2,),
        "b": (4,),
        "conv": (1, 4, 2, 3),
        "flat": (3,),
        "derived": (7,),
    }
    rules = [
        Concat(
            (r"l\.(\d+)\.q\.weight", r"l.\1.k.weight", r"l.\1.v.weight"), r"blocks.\1.qkv.weight"
        ),
        Split(r"fused", ("a", "b")),
        Rename(r"conv", r"conv", ops=(Permute((0, 3, 1, 2)), Reshape())),
        Rename(r"order", r"flat", ops=(Gather(0, (2, 1, 0)),)),
        Unused(r"buffer", "recomputed by vitzoo"),
        KeepInit(r"derived", "vitzoo fills it"),
    ]
    out = apply_rules(rules, source, shapes)
    assert out.problems(shapes) == []
    assert out.tensors["blocks.0.qkv.weight"][:, 0].tolist() == [1, 1, 2, 2, 3, 3]
    assert out.tensors["a"].tolist() == [0, 1] and out.tensors["b"].tolist() == [2, 3, 4, 5]
    assert out.tensors["conv"].shape == (1, 4, 2, 3)
    assert out.tensors["flat"].tolist() == [30, 20, 10]
    assert out.unused == {"buffer": "recomputed by vitzoo"}
    assert out.kept_init == {"derived": "vitzoo fills it"}


def test_checkpoint_of_another_family_is_named():
    state = timm_named(vitzoo.build(TINY_VIT).state_dict())
    other = vitzoo.build(
        {
            "model": {
                "type": "simple-vit",
                **{k: v for k, v in TINY_VIT["model"].items() if k != "type"},
            }
        }
    )
    with pytest.raises(WeightsError, match="looks like deit, vit"):
        load_state_dict(other, state, source="timm")


def test_converters_are_registered_and_listed():
    from click.testing import CliRunner

    from vitzoo.cli import cli

    names = vitzoo.get_registry().names("converter")
    assert {"timm-vit", "hf-vit"} <= set(names)
    result = CliRunner().invoke(cli, ["list", "--kind", "converter", "--json"])
    assert result.exit_code == 0, result.output
    assert "timm-vit" in result.output


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_readme_table_is_the_generated_one():
    """Regenerate with `python -m vitzoo.weights.table` when converters change."""
    from vitzoo.weights.table import END, START, markdown_table

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme[readme.index(START) : readme.index(END) + len(END)]
    assert shown == markdown_table()


def test_readme_offline_weights_snippet_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Pretrained weights") :]
    code = section[section.index("```python\n") + 10 :]
    code = code[: code.index("```")]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md[pretrained weights]", "exec"), scope)
    assert scope["model"].num_classes == 2 and scope["model"].input_size == (3, 384, 384)


def test_hf_gender_example_matches_the_hub_checkpoint_config():
    """The example's model is google/vit-base-patch16-224's (transformers' default ViTConfig
    is that model), apart from the head and dropout rates (training-only)."""
    pytest.importorskip("transformers")
    from transformers import ViTConfig
    from vitzoo_plugins.vit_weights import spec_from_hf_vit

    from vitzoo.spec import spec_to_dict
    from vitzoo.weights.load import spec_differences

    config = {
        **ViTConfig(num_labels=1000).to_dict(),
        "architectures": ["ViTForImageClassification"],
    }
    derived = spec_to_dict(vitzoo.resolve_spec(spec_from_hf_vit(config)))["model"]
    example = vitzoo.resolve_spec(ROOT / "examples" / "gender-classification-hf.yaml")
    assert example.train.init_from == "hf-hub:google/vit-base-patch16-224"
    differences = spec_differences(derived, spec_to_dict(example)["model"])
    assert differences == []


def test_a_plugin_registering_a_bad_converter_is_rolled_back():
    from vitzoo.plugins import load_plugins

    class BadPlugin:
        @vitzoo.hookimpl
        def register_architectures(self, register):
            from vitzoo.components.vit import VitConfig, build_vit

            class OtherVit(VitConfig):
                type: Literal["other-vit"] = "other-vit"

            register("other-vit", build_vit, OtherVit)

        @vitzoo.hookimpl
        def register_weight_converters(self, register):
            register("not a converter")

    system = load_plugins(entrypoints=False, extra=[("bad", BadPlugin())], quiet=True)
    assert system.records["bad"].status == "failed"
    assert "WeightConverter" in system.records["bad"].error
    assert ("architecture", "other-vit") not in system.registry


def test_readme_table_states_the_fidelity_rule_the_tests_apply() -> None:
    import re

    from fidelity import FLOAT32_RELATIVE_TOLERANCE, FLOAT64_TOLERANCE

    from vitzoo.weights.table import FIDELITY_RULE

    stated = re.fullmatch(
        r"float64 <= (\S+); float32 <= (\S+) x max\(1, max\\\|ref\\\|\)", FIDELITY_RULE
    )
    assert stated, FIDELITY_RULE
    assert (float(stated[1]), float(stated[2])) == (FLOAT64_TOLERANCE, FLOAT32_RELATIVE_TOLERANCE)


def test_every_released_name_loads_through_a_verified_converter() -> None:
    """Each preset's released names (the catalogue) need a converter registered for the preset's
    architecture and that source kind, with a test proving the outputs identical."""
    from vitzoo.weights.table import proof

    registry = vitzoo.get_registry()
    released = [p for p in registry.entries("preset") if p.released]
    assert len(released) >= 60
    unproven = {
        f"{p.name} ({source})": proof(p, source)
        for p in released
        for source in {r.source for r in p.released}
        if proof(p, source) != "yes"
    }
    assert unproven == {}


def test_the_table_joins_released_names_and_registered_converters() -> None:
    """A third party's preset appears with its released names; a source kind no converter of its
    architecture reads says so instead of claiming a proof."""
    from types import SimpleNamespace

    from vitzoo.weights.table import markdown_table

    @vitzoo.hookimpl
    def register_presets(register):  # noqa: ANN001, ANN202
        spec = {"model": {**TINY_VIT["model"]}}
        released = {"timm": "tiny_demo", "official": "demo-release-v1"}
        register("tiny-demo", spec, citation="test", expected_params=1, released=released)

    plugin = SimpleNamespace(register_presets=register_presets)
    system = vitzoo.load_plugins(only=["vit"], strict=True, extra=[("demo", plugin)])
    rows = [line for line in markdown_table(system).splitlines() if "`tiny-demo`" in line]
    assert rows == [
        "| `tiny-demo` | `tiny_demo` | - | `demo-release-v1` | official: no converter; timm: yes |"
    ]
    assert "`deit-s`" in markdown_table(system) and "`cait-s24`" not in markdown_table(system)
