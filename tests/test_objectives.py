"""Objectives: conformance on every compatible backbone, compatibility errors, and each
objective's own contract (MAE's encoder sees fewer tokens, the distillation teacher is frozen and
unsaved, DINO's EMA step), plus ``vitzoo.inspect_forward`` and the ``attention`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import vitzoo
from vitzoo.builder import resolve_spec
from vitzoo.components.vit import VitConfig, build_vit
from vitzoo.objectives import Objective, build_objective
from vitzoo.plugins import load_plugins
from vitzoo.spec import SpecError, spec_to_yaml, validate_spec
from vitzoo.testing.objective_checks import OBJECTIVE_CHECKS, objective_cases

SYSTEM = load_plugins(strict=True)
CASES = objective_cases(SYSTEM)
TINY = {
    "type": "vit",
    "image_size": 32,
    "dim": 32,
    "depth": 1,
    "num_heads": 2,
    "num_classes": 10,
    "patch": {"type": "linear", "patch_size": 8},
}


def tiny(arch: str = "vit", **changes: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return vitzoo.build({"model": {**TINY, "type": arch, **changes}}, system=SYSTEM)


def batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.randint(
        0, 10, (n,), generator=generator
    )


# --------------------------------------------------------------------------------------------
# Conformance: every objective x every compatible registered image backbone
# --------------------------------------------------------------------------------------------
def test_cases_cover_the_reference_backbones() -> None:
    pairs = {(c.objective, c.architecture) for c in CASES}
    for objective in SYSTEM.registry.names("objective"):
        for arch in ("vit", "simple-vit", "deit"):
            assert (objective, arch) in pairs


@pytest.mark.parametrize("check", OBJECTIVE_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_objective_conformance(case: Any, check: Any) -> None:
    check(case)


# --------------------------------------------------------------------------------------------
# Compatibility is decided when a spec is resolved and when an objective is built, by the one
# capability checker over what the parts declared
# --------------------------------------------------------------------------------------------
class FakeMapsConfig(VitConfig):
    """A stand-in hierarchical architecture (only its tags matter for spec validation)."""

    type: Literal["fake-maps"] = "fake-maps"


class FakeMapsPlugin:
    @staticmethod
    @vitzoo.hookimpl
    def register_architectures(register: Any) -> None:
        register("fake-maps", build_vit, FakeMapsConfig, tags={"image", "feature-maps"})


@pytest.mark.parametrize("objective", ["mae", "simmim", "mpp", "mp3"])
def test_token_objectives_rejected_for_feature_map_models_at_spec_time(objective: str) -> None:
    system = load_plugins(strict=True, extra=[("fake-maps", FakeMapsPlugin())])
    data = {"model": {**TINY, "type": "fake-maps"}, "objective": {"type": objective}}
    with pytest.raises(SpecError) as info:
        resolve_spec(data, system=system)
    (issue,) = info.value.issues
    assert issue.path == "objective.type"
    assert f"objective {objective!r} needs a model with capability tokens" in issue.message
    assert "fake-maps" in issue.message


def test_esvit_and_dino_accept_feature_map_models() -> None:
    system = load_plugins(strict=True, extra=[("fake-maps", FakeMapsPlugin())])
    for objective in ("dino", "esvit", "supervised"):
        data = {"model": {**TINY, "type": "fake-maps"}, "objective": {"type": objective}}
        assert resolve_spec(data, system=system).objective.type == objective


def test_build_time_check_reads_the_architectures_declared_offers() -> None:
    system = load_plugins(strict=True, extra=[("fake-maps", FakeMapsPlugin())])
    model = vitzoo.build({"model": {**TINY, "type": "fake-maps"}}, system=system)
    with pytest.raises(SpecError, match=r"objective\.type: objective 'mae' needs .*tokens"):
        build_objective({"type": "mae"}, model, system=system)


def test_token_dropping_encoders_are_rejected_for_per_patch_objectives() -> None:
    if ("architecture", "ats-vit") not in SYSTEM.registry:
        pytest.skip("the token-reduction plugin is not installed")
    example = dict(SYSTEM.registry.get("architecture", "ats-vit").example)
    data = {"model": {"type": "ats-vit", **example}, "objective": {"type": "simmim"}}
    with pytest.raises(SpecError, match="ats-vit' drops or merges tokens"):
        resolve_spec(data, system=SYSTEM)


def test_spec_with_objective_round_trips_through_yaml() -> None:
    data = {"model": TINY, "objective": {"type": "mae", "mask_ratio": 0.6, "decoder_dim": 32}}
    spec = validate_spec(SYSTEM.registry, data)
    again = validate_spec(SYSTEM.registry, __import__("yaml").safe_load(spec_to_yaml(spec)))
    assert again == spec
    assert build_objective(spec, tiny(), system=SYSTEM).config.mask_ratio == 0.6


def test_bad_objective_field_names_the_path() -> None:
    with pytest.raises(SpecError) as info:
        validate_spec(
            SYSTEM.registry,
            {"model": TINY, "objective": {"type": "mae", "decoder_dim": 30, "decoder_heads": 4}},
        )
    assert info.value.issues[0].path == "objective.decoder_heads"


# --------------------------------------------------------------------------------------------
# MAE
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_mae_encoder_sees_only_visible_tokens(ratio: float) -> None:
    objective = build_objective(
        {
            "type": "mae",
            "mask_ratio": ratio,
            "decoder_dim": 32,
            "decoder_depth": 1,
            "decoder_heads": 2,
        },
        tiny(),
        system=SYSTEM,
    )
    out = objective(batch()[0])
    visible = 16 - round(16 * ratio)
    assert objective.last_encoder_tokens == 1 + visible  # class token + visible patches
    assert float(out.metrics["encoder_tokens"]) == 1 + visible


def test_mae_extract_encoder_is_the_plain_classifier() -> None:
    model = tiny()
    keys = set(model.state_dict())
    objective = build_objective(
        {"type": "mae", "decoder_dim": 32, "decoder_heads": 2}, model, system=SYSTEM
    )
    encoder = objective.extract_encoder()
    assert encoder is model
    assert set(encoder.state_dict()) == keys
    assert encoder(batch()[0]).shape == (4, 10)


def test_mae_norm_pix_targets_change_the_loss() -> None:
    model = tiny()
    losses = []
    for norm in (True, False):
        objective = build_objective(
            {"type": "mae", "decoder_dim": 32, "decoder_heads": 2, "norm_pix_loss": norm},
            model,
            system=SYSTEM,
        )
        torch.manual_seed(3)
        losses.append(float(objective(batch()[0]).loss.detach()))
    assert losses[0] != pytest.approx(losses[1])


# --------------------------------------------------------------------------------------------
# Masked patch prediction targets
# --------------------------------------------------------------------------------------------
def test_mpp_mean_colour_classes() -> None:
    from vitzoo_plugins.objectives.masked_image import mean_colour_classes

    # two patches of 4 RGB pixels: mid grey, and pure red at the top of the range
    grey = torch.full((1, 1, 12), 0.5)
    red = torch.tensor([[[1.0, 0.0, 0.0] * 4]])
    classes = mean_colour_classes(torch.cat([grey, red], dim=1), 3, 3, 0.0, 1.0)
    assert classes.tolist() == [[4 + 4 * 8 + 4 * 64, 7]]


# --------------------------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------------------------
def distillation(student: torch.nn.Module, **config: Any) -> Objective:
    teacher = {"spec": {"model": {**TINY, "depth": 1}}}
    return build_objective(
        {"type": "distillation", "teacher": teacher, **config}, student, system=SYSTEM
    )


@pytest.mark.parametrize("arch", ["deit", "vit"])
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_distillation_teacher_frozen_and_not_saved(arch: str, kind: str) -> None:
    objective = distillation(tiny(arch), kind=kind).train()
    teacher = objective.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert not any(k.startswith("teacher") for k in objective.state_dict())
    assert all(id(p) not in {id(q) for q in objective.parameters()} for p in teacher.parameters())
    assert not teacher.training
    optimiser = torch.optim.SGD(list(objective.trainable_parameters()), lr=0.1)
    images, labels = batch()
    for _ in range(2):
        out = objective(images, labels)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key])
    assert {"label_loss", "distillation_loss", "teacher_agreement"} <= set(out.metrics)


def test_distillation_teacher_from_checkpoint(tmp_path: Path) -> None:
    teacher = tiny()
    path = vitzoo.save(teacher, tmp_path / "teacher.safetensors")
    objective = build_objective(
        {"type": "distillation", "teacher": {"checkpoint": str(path)}}, tiny("deit"), system=SYSTEM
    )
    x = batch()[0]
    torch.testing.assert_close(objective.teacher(x), teacher.eval()(x))


def test_distillation_teacher_source_needs_exactly_one() -> None:
    with pytest.raises(SpecError, match="exactly one of preset, spec, checkpoint"):
        validate_spec(
            SYSTEM.registry,
            {"model": TINY, "objective": {"type": "distillation", "teacher": {}}},
        )


def test_distillation_class_count_mismatch_is_explained() -> None:
    with pytest.raises(ValueError, match="teacher predicts 10 classes but the student predicts 5"):
        distillation(tiny(num_classes=5))


# --------------------------------------------------------------------------------------------
# DINO / EsViT: the EMA step
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dino", "esvit"])
def test_after_step_moves_the_teacher_towards_the_student(name: str) -> None:
    config = {
        "type": name,
        "out_dim": 16,
        "hidden_dim": 16,
        "bottleneck_dim": 8,
        "local_crops": 1,
        "teacher_momentum": 0.5,
    }
    objective = build_objective(config, tiny(), system=SYSTEM).train()
    optimiser = torch.optim.SGD(list(objective.trainable_parameters()), lr=0.5)
    out = objective(batch()[0])
    optimiser.zero_grad()
    out.loss.backward()
    optimiser.step()
    student = torch.nn.utils.parameters_to_vector(objective.model.parameters())
    teacher_before = torch.nn.utils.parameters_to_vector(objective.teacher_model.parameters())
    assert torch.all(objective.center == 0)
    objective.after_step()
    teacher_after = torch.nn.utils.parameters_to_vector(objective.teacher_model.parameters())
    torch.testing.assert_close(teacher_after, 0.5 * teacher_before + 0.5 * student)
    assert not torch.all(objective.center == 0)
    assert not objective.teacher_model.training


def test_dino_takes_ready_made_views_of_other_sizes() -> None:
    config = {
        "type": "dino",
        "out_dim": 16,
        "hidden_dim": 16,
        "bottleneck_dim": 8,
        "local_crops": 1,
    }
    objective = build_objective(config, tiny(), system=SYSTEM).train()
    views = [torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 16, 16)]
    assert torch.isfinite(objective(views).loss)


# --------------------------------------------------------------------------------------------
# Introspection
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vit", "simple-vit", "deit"])
def test_inspect_leaves_outputs_unchanged(arch: str) -> None:
    model = tiny(arch, depth=2).eval()
    x = batch(2)[0]
    with torch.no_grad():
        before = model(x)
        seen = vitzoo.inspect_forward(model, x)
        after = model(x)
    torch.testing.assert_close(seen.output, before)
    torch.testing.assert_close(after, before)
    n = 16 + model.num_prefix_tokens
    assert len(seen.attentions) == 2
    assert all(a.shape == (2, 2, n, n) for a in seen.attentions.values())
    assert list(seen.intermediates) == ["layer0", "layer1"]
    assert seen.intermediates["layer1"].shape == (2, 32, 4, 4)  # the patch tokens' map
    torch.testing.assert_close(seen.features, model.forward_features(x))


def test_inspect_selected_layers() -> None:
    seen = vitzoo.inspect_forward(tiny(depth=2).eval(), batch(1)[0], layers=[-1])
    assert list(seen.intermediates) == ["layer-1"]


@pytest.mark.parametrize("rollout", [False, True])
def test_attention_command_writes_an_overlay(tmp_path: Path, rollout: bool) -> None:
    from vitzoo.commands.inspect import COMMANDS, attention

    assert attention in COMMANDS
    ckpt = vitzoo.save(tiny(depth=2), tmp_path / "model.safetensors")
    image = tmp_path / "image.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype("uint8")).save(
        image
    )
    out = tmp_path / "overlay.png"
    args = [str(ckpt), str(image), "-o", str(out), "--layer", "-1"] + (
        ["--rollout"] if rollout else []
    )
    result = CliRunner().invoke(attention, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.format == "PNG"
        # upscaled by a whole factor to a readable size (40 px -> 400), colour bar on the right
        assert written.size[1] == 400 and written.size[0] > 480


def test_inspect_hierarchical_model_gives_feature_maps() -> None:
    maps_archs = [
        e for e in SYSTEM.registry.entries("architecture") if {"image", "feature-maps"} <= e.tags
    ]
    if not maps_archs:
        pytest.skip("no hierarchical architecture is registered")
    entry = maps_archs[0]
    torch.manual_seed(0)
    model = vitzoo.build({"model": {"type": entry.name, **entry.example}}, system=SYSTEM).eval()
    x = model.example_input(2)
    with torch.no_grad():
        seen = vitzoo.inspect_forward(model, x)
        torch.testing.assert_close(seen.output, model(x))
    assert seen.intermediates
    assert all(t.ndim == 4 and t.shape[0] == 2 for t in seen.intermediates.values())


def test_a_teacher_must_take_the_students_images() -> None:
    """The teacher is fed the student's batch: a teacher built for another image size is a
    whole-spec error at the teacher, not a shape error in the first training step."""
    teacher = {"spec": {"model": {**TINY, "image_size": 64, "num_classes": TINY["num_classes"]}}}
    data = {"model": TINY, "objective": {"type": "distillation", "teacher": teacher}}
    with pytest.raises(SpecError) as info:
        resolve_spec(data, system=SYSTEM)
    (issue,) = info.value.issues
    assert issue.path == "objective.teacher.spec"
    assert "the teacher takes [64, 64]-pixel images and the student is fed [32, 32]" in str(issue)
