"""The converter machinery: rules, strict accounting, converter selection, registration."""

from __future__ import annotations

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
