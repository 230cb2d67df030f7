"""Compose, don't copy: issue-3 mechanisms combined in ways no paper used, each run through
the whole conformance suite (``vitzoo.testing``) as if it were a registered architecture.

Every combination is a plain spec -- a host architecture with parts swapped -- so passing here
shows the components really are independent of the model they were written for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from shared_specs import CONV_TOKENIZER_3D

from vitzoo.testing import Variant, check_variant
from vitzoo.testing.variants import plugin_system

TINY = {"image_size": 32, "dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}
SPT = {"type": "spt", "patch_size": 8}
CONV = {
    "type": "conv-tokenizer",
    "kernel_size": 3,
    "stride": 2,
    "padding": 1,
    "hidden_channels": 16,
}
T2T = {"type": "t2t", "token_dim": 16}
T2T_SOFTMAX = {"type": "t2t", "token_dim": 16, "token_layer": "transformer"}

#: name -> (host architecture, overrides). None of these appears in any of the papers.
COMBINATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "t2t-tokens+lsa+seq-pool": (
        "vit",
        {
            "patch": T2T,
            "attention": {"type": "lsa"},
            "pool": {"type": "seq-pool"},
            "class_token": False,
        },
    ),
    "simple-vit+spt+talking-heads": (
        "simple-vit",
        {"patch": SPT, "attention": {"type": "talking-heads"}},
    ),
    "vit+conv-tokenizer+re-attention": (
        "vit",
        {"patch": CONV, "attention": {"type": "re-attention"}},
    ),
    "cct+spt+re-attention-layernorm": (
        "cct",
        {"patch": SPT, "attention": {"type": "re-attention", "norm": "layer"}},
    ),
    "cait+lsa": (
        "cait",
        {
            "patch": {"type": "linear", "patch_size": 8},
            "attention": {"type": "lsa"},
            "cls_depth": 1,
        },
    ),
    "cait+conv-tokenizer+seq-pool": (
        "cait",
        {"patch": CONV, "pool": {"type": "seq-pool"}, "cls_depth": 1},
    ),
    "cait+t2t-softmax+re-attention": (
        "cait",
        {"patch": T2T_SOFTMAX, "attention": {"type": "re-attention"}},
    ),
    "deepvit+seq-pool+sincos": (
        "deepvit",
        {
            "patch": {"type": "linear", "patch_size": 8},
            "class_token": False,
            "pool": {"type": "seq-pool"},
            "posenc": {"type": "sincos"},
        },
    ),
    "t2t-vit+talking-heads+cct-block": (
        "t2t-vit",
        {"patch": T2T, "attention": {"type": "talking-heads"}, "block": {"type": "cct"}},
    ),
    "simple-vit+cct-block+lsa": (
        "simple-vit",
        {
            "patch": {"type": "linear", "patch_size": 8},
            "block": {"type": "cct"},
            "attention": {"type": "lsa"},
        },
    ),
    "vit+spt+class-attention-blocks": (
        "vit",
        {"patch": SPT, "block": {"type": "class-attention", "layer_scale": 1e-5}},
    ),
    "deepvit+spt+no-positions": ("deepvit", {"patch": SPT, "posenc": {"type": "none"}}),
    "cct+t2t-softmax+class-token": (
        "cct",
        {"patch": T2T_SOFTMAX, "class_token": True, "pool": {"type": "cls"}},
    ),
    "vit+two-layer-conv-tokenizer+lsa+mean": (
        "vit",
        {
            "patch": {**CONV, "num_layers": 2, "stride": 1},
            "attention": {"type": "lsa"},
            "pool": {"type": "mean"},
        },
    ),
    "simple-vit+t2t-performer+re-attention": (
        "simple-vit",
        {"patch": T2T, "attention": {"type": "re-attention"}},
    ),
    "cct+talking-heads+layer-scale": (
        "cct",
        {
            "patch": CONV,
            "attention": {"type": "talking-heads"},
            "block": {"type": "cct", "layer_scale": 1e-4},
        },
    ),
    "cait+spt+seq-pool": ("cait", {"patch": SPT, "pool": {"type": "seq-pool"}, "cls_depth": 1}),
    "t2t-vit+lsa+seq-pool": (
        "t2t-vit",
        {
            "patch": T2T,
            "attention": {"type": "lsa"},
            "pool": {"type": "seq-pool"},
            "class_token": False,
        },
    ),
    "vit+spt+talking-heads+layer-scale": (
        "vit",
        {
            "patch": SPT,
            "attention": {"type": "talking-heads"},
            "block": {"type": "pre-norm", "layer_scale": 1e-5},
        },
    ),
    "deepvit+cct-block+conv-tokenizer+no-positions": (
        "deepvit",
        {"patch": CONV, "block": {"type": "cct"}, "posenc": {"type": "none"}},
    ),
    "simple-vit+conv-tokenizer+seq-pool": (
        "simple-vit",
        {"patch": CONV, "pool": {"type": "seq-pool"}},
    ),
    "cct+lsa": ("cct", {"patch": CONV, "attention": {"type": "lsa"}}),
    "deit+t2t+talking-heads": ("deit", {"patch": T2T, "attention": {"type": "talking-heads"}}),
    # with other families' components (skipped if that family is not installed)
    "cct+nystrom": ("cct", {"patch": CONV, "attention": {"type": "nystrom", "landmarks": 4}}),
    "vit+parallel-block+talking-heads+spt": (
        "vit",
        {
            "patch": SPT,
            "attention": {"type": "talking-heads"},
            "block": {"type": "parallel", "branches": 2},
        },
    ),
    "vit+peg+conv-tokenizer+re-attention": (
        "vit",
        {"patch": CONV, "posenc": {"type": "peg"}, "attention": {"type": "re-attention"}},
    ),
    "vit3d+conv-tokenizer-3d+lsa": (
        "vit3d",
        {
            "frames": 4,
            "attention": {"type": "lsa"},
            "patch": dict(CONV_TOKENIZER_3D),
        },
    ),
    # issue 10: efficient attention and transformer improvements, each in two or more hosts
    "cait+performer+swiglu": (
        "cait",
        {
            "patch": {"type": "linear", "patch_size": 8},
            "attention": {"type": "performer", "num_features": 16},
            "mlp": {"type": "swiglu"},
            "cls_depth": 1,
        },
    ),
    "cct+performer+geglu": (
        "cct",
        {"patch": CONV, "attention": {"type": "performer"}, "mlp": {"type": "geglu"}},
    ),
    "t2t-vit+linformer+rmsnorm": (
        "t2t-vit",
        {
            "patch": T2T,
            "attention": {"type": "linformer", "proj_len": 8, "share_kv": True},
            "block": {"type": "pre-norm", "norm": "rmsnorm"},
            "norm": "rmsnorm",
        },
    ),
    "deepvit+linformer+spt": (
        "deepvit",
        {"patch": SPT, "attention": {"type": "linformer", "proj_len": 4}},
    ),
    "cct+rope-axial": (
        "cct",
        {"patch": CONV, "attention": {"type": "rope"}, "posenc": {"type": "none"}},
    ),
    "simple-vit+rope-mixed+rmsnorm-qk-norm": (
        "simple-vit",
        {
            "patch": {"type": "linear", "patch_size": 8},
            "attention": {
                "type": "rope",
                "rope": "mixed",
                "qk_norm": True,
                "qk_norm_type": "rmsnorm",
            },
        },
    ),
    "vit+parallel-block+geglu+rmsnorm": (
        "vit",
        {
            "patch": {"type": "linear", "patch_size": 8},
            "mlp": {"type": "geglu"},
            "block": {"type": "parallel", "branches": 2, "norm": "rmsnorm"},
        },
    ),
}

KIND_OF_FIELD = {
    "mlp": "mlp",
    "patch": "patchifier",
    "posenc": "posenc",
    "attention": "attention",
    "block": "block",
    "pool": "pooling",
}


@pytest.fixture(scope="module")
def system() -> Any:
    return plugin_system(strict=False)


def combination_variant(system: Any, host: str, overrides: dict[str, Any]) -> Variant:
    """The host architecture re-registered with the combination as its tiny example."""
    registry = system.registry
    if ("architecture", host) not in registry:
        pytest.skip(f"architecture {host!r} is not installed")
    for field, kind in KIND_OF_FIELD.items():
        part = overrides.get(field)
        if part is not None and (kind, part["type"]) not in registry:
            pytest.skip(f"{kind} {part['type']!r} is not installed")
    entry = registry.get("architecture", host)
    example = {**TINY, **overrides}
    return Variant(
        "architecture",
        host,
        dataclasses.replace(entry, example=example),
        entry.plugin,
        entry.tags,
        system,
    )


def test_at_least_twenty_unpublished_combinations() -> None:
    assert len(COMBINATIONS) >= 20


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_combination_passes_the_conformance_suite(system: Any, name: str) -> None:
    host, overrides = COMBINATIONS[name]
    variant = combination_variant(system, host, overrides)
    results = check_variant(variant, on_fail="collect")
    failed = [f"{r.check}: {r.message}" for r in results if r.status == "failed"]
    assert not failed, "\n".join(failed)
    assert sum(r.status == "passed" for r in results) >= 15
