"""Issue 11: every case that used to validate and crash (or gave an unclear error), pinned.

Each spec either gets a plain error at the spec path the user has to change, or builds and runs.
The general guarantee is the property test (tests/test_spec_contract.py); these are the
reproducers from the issue, so a regression names the exact case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import torch
from click.testing import CliRunner

import vitzoo
from vitzoo.cli import add_builtin_commands, cli
from vitzoo.spec import SpecError

add_builtin_commands(cli)  # train, evaluate, predict, attention (main() adds them)

TINY = {
    "type": "vit",
    "image_size": 32,
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "num_classes": 3,
    "patch": {"type": "linear", "patch_size": 8},
}
DINO = {"type": "dino", "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "local_crops": 2}
VIDEO = {"image_size": 16, "frames": 4, "dim": 32, "num_heads": 2, "num_classes": 3}


def tiny(**changes) -> dict:
    return {"model": {**TINY, **changes}}


def issues(source, **overrides) -> list[str]:
    with pytest.raises(SpecError) as info:
        vitzoo.resolve_spec(source, overrides or None)
    return [str(i) for i in info.value.issues]


REJECTED = {
    "int past int64": (tiny(dim=2**63), "model.dim: must be less than or equal to"),
    "negative patch": (
        tiny(patch={"type": "linear", "patch_size": -8}),
        "model.patch.patch_size: expected a positive integer or a pair",
    ),
    "zero image": (tiny(image_size=0), "model.image_size: expected a positive integer"),
    "string for int": (tiny(in_chans="8"), "model.in_chans: must be a valid integer, got '8'"),
    "bool for int": (
        tiny(patch={"type": "linear", "patch_size": True}),
        "model.patch.patch_size: expected a positive integer or a pair",
    ),
    "nan eps": (tiny(norm_eps=float("nan")), "model.norm_eps: must be a finite number"),
    "inf layer scale": (
        tiny(block={"type": "pre-norm", "layer_scale": float("inf")}),
        "model.block.layer_scale: must be a finite number",
    ),
    "rate of one": (
        tiny(attention={"type": "mhsa", "proj_drop": 1.0}),
        "model.attention.proj_drop: must be less than 1",
    ),
    "head dropout": (
        tiny(head={"type": "linear", "dropout": -0.1}),
        "model.head.dropout: must be greater than or equal to 0",
    ),
    "maxvit head": (
        {"model": {"type": "maxvit", "head_hidden_dim": -1}},
        "model.head_hidden_dim: must be greater than or equal to 1",
    ),
    "levit ratio": (
        {"model": {"type": "levit", "down_attn_ratio": -1}},
        "model.down_attn_ratio: must be greater than 0",
    ),
    "twins peg": (
        {"model": {"type": "twins-svt", "peg_kernel_size": 0}},
        "model.peg_kernel_size: must be greater than or equal to 1",
    ),
    "crossvit classes": (
        {"model": {"type": "crossvit", "num_classes": -1}},
        "model.num_classes: must be greater than or equal to 0",
    ),
    "vivit drop path": (
        {"model": {"type": "vivit", "drop_path_rate": 1.5}},
        "model.drop_path_rate: must be less than 1",
    ),
    "epochs 1e30": ({**tiny(), "train": {"epochs": 1e30}}, "train.epochs: must be a valid integer"),
    "grad clip nan": (
        {**tiny(), "train": {"grad_clip": float("nan")}},
        "train.grad_clip: must be a finite number",
    ),
    "pool padding": (
        {
            "model": {
                **TINY,
                "type": "cct",
                "patch": {"type": "conv-tokenizer", "kernel_size": 3, "pool_padding": 3},
            }
        },
        "model.patch.pool_padding: max-pool padding 3 is more than half the pool kernel 3",
    ),
    "conv stride 0": (
        {"model": {**TINY, "type": "cct", "patch": {"type": "conv-tokenizer", "stride": 0}}},
        "model.patch.stride: expected a positive integer or a list",
    ),
    "dim 1e6": (tiny(dim=1_000_000, num_heads=1), "VITZOO_MAX_PARAMS"),
    "depth 1e6": (tiny(depth=1_000_000), "VITZOO_MAX_TENSORS"),
    "register tokens 1e6": (tiny(register_tokens=1_000_000), "VITZOO_MAX_ACTIVATIONS"),
    # the objective is budgeted with its model (these validated, then exhausted memory)
    "dino hidden 1e6": (
        {**tiny(num_classes=0), "objective": {**DINO, "hidden_dim": 1_000_000}},
        "objective: this model with its objective needs more than 5B parameters",
    ),
    "dino crop size 1e5": (
        {**tiny(num_classes=0), "objective": {**DINO, "local_crop_size": 100_000}},
        "objective: this model with its objective needs more than 20B activation elements",
    ),
    "mae decoder depth 1e5": (
        {**tiny(num_classes=0), "objective": {"type": "mae", "decoder_depth": 100_000}},
        "objective: this model with its objective needs more than",
    ),
    # a field's own bounds hold inside the bounded types (they were silently widened)
    "dino 65 local crops": (
        {**tiny(num_classes=0), "objective": {**DINO, "local_crops": 65}},
        "objective.local_crops: must be less than or equal to 64",
    ),
    "dino out_dim 1": (
        {**tiny(num_classes=0), "objective": {**DINO, "out_dim": 1}},
        "objective.out_dim: must be greater than or equal to 2",
    ),
    "image 2**63": (tiny(image_size=2**63), "model.image_size"),
    "deit pool cls": (
        {"model": {**TINY, "type": "deit", "pool": {"type": "cls"}}},
        "model.head.type: head 'distillation' needs pooled features of shape (batch, 2, dim), "
        "but pool 'cls' gives (batch, dim)",
    ),
    "deit mlp head": (
        {"model": {**TINY, "type": "deit", "head": {"type": "mlp", "hidden_dim": 8}}},
        "model.head.type: head 'mlp' needs pooled features of shape (batch, dim)",
    ),
    "window in video": (
        {"model": {"type": "vivit", **VIDEO, "attention": {"type": "window"}}},
        "model.attention.type: attention 'window' needs a 2-D (h, w) token grid; model.type "
        "'vivit' gives video input",
    ),
    "xcit block in video": (
        {"model": {"type": "vit3d", **VIDEO, "block": {"type": "xcit"}}},
        "model.block.type: the xcit block's local patch interaction needs a 2D grid",
    ),
    "factorized block in image model": (
        tiny(block={"type": "factorized-space-time"}),
        "model.block.type: factorized-space-time blocks need a video model",
    ),
    "grid attention under patch dropout": (
        tiny(attention={"type": "conv-proj"}, patch_dropout=0.5),
        "needs every patch token of the grid in order, but the grid changes inside this model "
        "(patch_dropout: 0.5)",
    ),
    "window with register tokens": (
        tiny(
            attention={"type": "window", "window_size": 2},
            class_token=False,
            pool={"type": "mean"},
            register_tokens=2,
        ),
        "attention 'window' cannot handle prefix tokens; this model has 2",
    ),
    "memory-vit with spatial reduction": (
        {
            "model": {
                "type": "memory-vit",
                "num_classes": 3,
                "base": {**TINY, "attention": {"type": "spatial-reduction"}},
            }
        },
        "model.type 'memory-vit' passes a token mask to its blocks, and attention "
        "'spatial-reduction' cannot take one",
    ),
    "mae on crossvit": (
        {"model": {"type": "crossvit"}, "objective": {"type": "mae"}},
        "objective.type: objective 'mae' needs a model with capability tokens",
    ),
    "mae on video": (
        {"model": {"type": "vit3d", **VIDEO, "depth": 1}, "objective": {"type": "mae"}},
        "objective.type: objective 'mae' needs image input",
    ),
    "teacher spec": (
        {
            **tiny(),
            "objective": {
                "type": "distillation",
                "teacher": {"spec": {"model": {**TINY, "image_size": 33}}},
            },
        },
        "objective.teacher.spec.model.patch.patch_size: in this nested spec: patch size 8 does "
        "not divide image size 33",
    ),
    "missing type": ({"model": {"dim": 32}}, "model.type: model.type is missing; one of: "),
    "preset under model": (
        {"model": {"preset": "vit-s16"}},
        "`preset:` goes at the top level of the spec",
    ),
    "union": (tiny(image_size=[32, 32, 3]), "model.image_size: expected a positive integer"),
    "component as number": (
        tiny(mlp=3),
        "model.mlp: expected a mapping of this component's fields",
    ),
    "typo in type": (tiny(attention={"type": "mhsaa"}), "(did you mean 'mhsa'?)"),
    "typo in field": (
        tiny(num_head=2),
        "model.num_head: unknown field (did you mean 'num_heads'?)",
    ),
    "typo in preset": ({"preset": "vit-s61"}, "unknown preset 'vit-s61' (did you mean 'vit-s16'?)"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_issue_reproducer_gets_a_plain_error(case: str) -> None:
    spec, expected = REJECTED[case]
    found = issues(spec)
    assert any(expected in line for line in found), found
    for line in found:
        for word in ("Input should", "instance of", "tagged-union", "discriminator", "Unable to"):
            assert word not in line, line


def test_one_error_per_union_field_without_branch_names() -> None:
    (line,) = issues(tiny(image_size="big"))
    assert "model.image_size:" in line and "model.image_size.int" not in line


def test_typo_and_cross_field_rule_reported_together() -> None:
    found = issues(tiny(dimm=32, patch={"type": "linear", "patch_size": 5}))
    assert any("model.dimm: unknown field" in line for line in found)
    assert any("model.patch.patch_size: patch size 5 does not divide" in line for line in found)


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("model:\n  type: vit\n  dim: 32\n  dim: 64\n")
    (line,) = issues(path)
    assert line.startswith(f"{path}:4:3  model.dim: duplicate key 'dim' (first given on line 3)")


def test_validated_sizes_build_and_run() -> None:
    """Things that are valid stay valid: a pair image size, an int ratio, zero classes."""
    spec = vitzoo.resolve_spec(
        tiny(image_size=[32, 16], mlp={"type": "mlp", "ratio": 2}, num_classes=0)
    )
    from vitzoo.builder import build_from_spec

    model = build_from_spec(spec).eval()
    assert model(torch.randn(2, 3, 32, 16)).shape == (2, 32)


def test_budget_can_be_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITZOO_MAX_PARAMS", "1000")
    (line,) = issues(tiny())
    assert "more than 1K parameters" in line and "VITZOO_MAX_PARAMS=N" in line
    monkeypatch.setenv("VITZOO_MAX_PARAMS", "0")
    vitzoo.resolve_spec(tiny())


def test_a_plugin_registered_after_the_first_validation_is_seen() -> None:
    from vitzoo.components.mlp import MlpConfig, build_mlp
    from vitzoo.plugins import load_plugins
    from vitzoo.spec import validate_spec

    class LateMlp(MlpConfig):
        type: Literal["late-mlp"] = "late-mlp"  # type: ignore[assignment]

    class Late:
        @vitzoo.hookimpl
        def register_mlps(self, register):
            register("late-mlp", build_mlp, LateMlp)

    system = load_plugins(only=["vit"])
    data = {"model": {**TINY, "mlp": {"type": "late-mlp"}}}
    with pytest.raises(SpecError):
        validate_spec(system.registry, data)
    from vitzoo.plugins import register_plugin

    register_plugin(system, Late(), "late", strict=True)
    assert validate_spec(system.registry, data).model.mlp.type == "late-mlp"


def test_unknown_capability_word_is_a_registration_error() -> None:
    from vitzoo.components.mlp import MlpConfig, build_mlp
    from vitzoo.registry import RegistrationError, make_entry

    with pytest.raises(
        RegistrationError, match="unknown capability 'grid2d'.*did you mean 'grid-2d'"
    ):
        make_entry("mlp", "p", "mlp", build_mlp, MlpConfig, needs={"grid2d"})


def test_schema_accepts_a_preset_with_a_model_without_type() -> None:
    from vitzoo.spec import spec_json_schema

    schema = spec_json_schema(vitzoo.get_registry())
    assert "model" not in schema.get("required", [])
    model = schema["properties"]["model"]
    assert {"type": "object"} in model["anyOf"]  # overrides of a preset
    (rule, _) = schema["allOf"]
    assert rule["if"] == {"not": {"required": ["preset"]}}
    assert rule["then"]["required"] == ["model"]  # without a preset, a full model with type


def test_inspect_layers_are_labelled_as_asked_and_bounded() -> None:
    model = vitzoo.build({"model": {**TINY, "depth": 2}}).eval()
    x = torch.randn(1, 3, 32, 32)
    seen = vitzoo.inspect_forward(model, x, layers=[-1, 0])
    _, outputs = model.forward_intermediates(x)
    assert set(seen.intermediates) == {"layer-1", "layer0"}
    torch.testing.assert_close(seen.intermediates["layer-1"], outputs[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(seen.intermediates["layer0"], outputs[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="names layer 1 twice"):
        vitzoo.inspect_forward(model, x, layers=[1, -1])
    with pytest.raises(ValueError, match="layer 99 is out of range"):
        vitzoo.inspect_forward(model, x, layers=[99])


def test_known_failure_lives_with_the_variant() -> None:
    entry = vitzoo.get_registry().get("architecture", "regionvit")
    assert "check_gradients_flow" in entry.known_failures


# -- the CLI --------------------------------------------------------------------------------
def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_build_blames_the_flag_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(tiny()))
    result = run("build", str(path), "--set", "model.dim=-1", "--no-forward")
    assert result.exit_code == 2
    assert "--set model.dim=-1  model.dim: must be greater than or equal to 1" in result.output


def test_cli_train_spec_errors_exit_2_and_name_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(tiny()))
    data = tmp_path / "data"
    result = run(
        "train", str(path), "--data", str(data), "--epochs", "0", "--out", str(tmp_path / "r")
    )
    assert result.exit_code == 2
    assert "--epochs 0  train.epochs: must be greater than or equal to 1" in result.output
    result = run("train", str(path), "--data", str(data), "--set", "train.lr=-1")
    assert result.exit_code == 2 and "--set train.lr=-1  train.lr:" in result.output
    assert not (tmp_path / "r").exists()  # no run folder for a spec that never validated


def test_cli_internal_error_is_one_line_unless_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    import vitzoo.builder

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(vitzoo.builder, "build_from_spec", broken)
    result = CliRunner().invoke(cli, ["build", "vit-ti16", "--no-forward"])
    assert result.exit_code == 1
    assert "vitzoo: internal error: RuntimeError: something inside broke" in result.output
    assert "run with --debug for the traceback" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["--debug", "build", "vit-ti16", "--no-forward"])
    assert isinstance(result.exception, RuntimeError)


def test_cli_input_errors_are_plain_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every InputError is the user's to fix: its message, exit 2, never "internal error"."""
    import vitzoo.builder
    from vitzoo.errors import InputSizeError

    def refuses(*args, **kwargs):
        raise InputSizeError("pos_embed cannot be resampled to 7x7: use image_size 224")

    monkeypatch.setattr(vitzoo.builder, "build_from_spec", refuses)
    result = CliRunner().invoke(cli, ["build", "vit-ti16", "--no-forward"])
    assert result.exit_code == 2
    assert result.output.strip() == "pos_embed cannot be resampled to 7x7: use image_size 224"


def test_cli_attention_refuses_bad_inputs_plainly(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    result = run("attention", "vit-ti16", str(text), "-o", str(tmp_path / "out.png"))
    assert result.exit_code == 2 and "is not an image file" in result.output  # bad input
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    result = run("attention", "vit-ti16", str(image), "-o", str(tmp_path / "missing" / "o.png"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_attention_layer_range_and_data_statistics(tmp_path: Path) -> None:
    from PIL import Image

    from vitzoo.data import resolve_data_config

    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(
        json.dumps({**tiny(depth=2), "data": {"mean": [0.5] * 3, "std": [0.5] * 3}})
    )
    result = run(
        "attention", str(spec_path), str(image), "-o", str(tmp_path / "o.png"), "--layer", "99"
    )
    assert result.exit_code == 2 and "--layer: layer index 99 is out of range" in result.output
    model = vitzoo.build(str(spec_path))
    data = resolve_data_config(model)  # what `attention` normalises with
    assert (data.mean, data.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_cli_predict_missing_image_says_so(tmp_path: Path) -> None:
    model = vitzoo.build(tiny())
    ckpt = tmp_path / "m.safetensors"
    vitzoo.save(model, ckpt)
    result = run("predict", str(ckpt), str(tmp_path / "nope.png"))
    assert result.exit_code == 2  # no input readable: bad input (README, "Exit status")
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "no such file" in output and "Errno" not in output


def test_cli_check_on_a_failed_plugin_is_one_line(fake_plugins) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(fake_plugins), os.environ.get("PYTHONPATH", "")]),
    }
    code = "from vitzoo.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "check", "fake-brokenimport"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "fake-brokenimport" in proc.stderr


def test_readme_budget_section_names_the_variables() -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    for name in ("VITZOO_MAX_PARAMS", "VITZOO_MAX_ACTIVATIONS", "VITZOO_TRIAL_BUILD"):
        assert name in text
