"""Model checks: every component (in its host model) and every architecture builds and behaves.

Builds from YAML and round-trips its spec, gives logits of the right shape that are finite,
deterministic in eval and independent across the batch, lets gradients reach every parameter,
survives state_dict / checkpoint / deepcopy round trips, runs in float32 and bfloat16 and at
batch one, splits into features and head, resets its classifier, gives feature maps (see
:mod:`vitzoo.testing.feature_checks`), exposes its attention maps and compiles. Attention with a
key-padding mask and patchifiers with an indivisible image size get one check more each.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import SkipTest

import torch
from torch import nn

from vitzoo.builder import build_from_spec
from vitzoo.checkpoint import load as load_checkpoint
from vitzoo.checkpoint import save as save_checkpoint
from vitzoo.introspection import attention_modules, record_attention
from vitzoo.spec import (
    SpecError,
    load_spec_file,
    parse_yaml,
    resolved_config,
    spec_to_dict,
    spec_to_yaml,
    validate_spec,
)
from vitzoo.testing.checks import (
    BATCH,
    MODEL_KINDS,
    Check,
    assert_finite,
    assert_logits,
    assert_same,
    describe,
    example_input,
    fail,
    forward,
    register_check_generator,
    seeded,
    slow,
    tensors_of,
)
from vitzoo.testing.feature_checks import feature_checks_for
from vitzoo.testing.variants import Variant

#: The backend of the compile check: ``aot_eager`` traces with dynamo and AOTAutograd (where
#: graph breaks and unsupported ops show up) without inductor's C++ code generation, which
#: would take minutes per model on CPU.
COMPILE_BACKEND = "aot_eager"


# --------------------------------------------------------------------------------------------
# Checks for every model
# --------------------------------------------------------------------------------------------
def check_builds_from_yaml(variant: Variant) -> None:
    """The tiny spec dumped to a YAML file loads back (file errors mapped) and builds."""
    spec = variant.tiny_spec()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(spec_to_yaml(spec), encoding="utf-8")
        try:
            loaded = load_spec_file(variant.system.registry, path)
        except SpecError as exc:
            raise fail(variant, f"its YAML spec does not load back:\n{exc}") from None
    with seeded(0):
        model = build_from_spec(loaded, system=variant.system).eval()
    out = forward(model, example_input(model))
    assert_logits(variant, out, BATCH, model.num_classes, "model built from YAML")


def check_spec_roundtrip(variant: Variant) -> None:
    """spec -> YAML -> spec gives an equal spec, and the built model carries it."""
    spec = variant.tiny_spec()
    text = spec_to_yaml(spec)
    again = validate_spec(variant.system.registry, parse_yaml(text), text=text)
    if again != spec or spec_to_dict(again) != spec_to_dict(spec):
        raise fail(
            variant,
            f"spec -> YAML -> spec changed it:\n{spec_to_dict(spec)}\n!=\n{spec_to_dict(again)}",
        )
    if variant.build().vitzoo_spec != spec:
        raise fail(variant, "the built model's vitzoo_spec is not the spec it was built from")


def check_output_shape(variant: Variant) -> None:
    """(B, num_classes) in eval; in training too, or a (cls, dist) pair for "distillation"."""
    model = variant.build()
    x = example_input(model)
    classes = model.num_classes
    assert_logits(variant, forward(model, x), BATCH, classes, f"eval forward of {describe(x)}")
    out = forward(model.train(), x)
    if "distillation" in variant.tags:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise fail(
                variant, f"training output should be a (cls, dist) pair, got {describe(out)}"
            )
        for i, part in enumerate(out):
            assert_logits(variant, part, BATCH, classes, f"training output [{i}]")
    else:
        assert_logits(variant, out, BATCH, classes, f"training forward of {describe(x)}")


def check_no_nan_inf(variant: Variant) -> None:
    """Outputs are finite in eval and training mode."""
    model = variant.build()
    x = example_input(model)
    assert_finite(variant, forward(model, x), "eval output")
    assert_finite(variant, forward(model.train(), x), "training output")


def check_deterministic_eval(variant: Variant) -> None:
    """Two eval forwards of the same input agree exactly (no dropout or noise in eval)."""
    model = variant.build()
    x = example_input(model)
    assert_same(
        variant, "second eval forward", forward(model, x), forward(model, x), atol=0, rtol=0
    )


def check_batch_independence(variant: Variant) -> None:
    """Changing sample 1 leaves sample 0's eval output unchanged (no mixing across the batch)."""
    if "batch-coupled" in variant.tags:
        raise SkipTest(f"{variant.id} is tagged batch-coupled: samples legitimately interact")
    model = variant.build()
    x = example_input(model)
    other = x.clone()
    with seeded(7):
        other[1] = torch.randn_like(other[1]) * 2.0
    first = tensors_of(forward(model, x))
    second = tensors_of(forward(model, other))
    assert_same(
        variant,
        "sample 0's output after changing sample 1",
        [t[0] for t in second],
        [t[0] for t in first],
    )


def check_gradients_flow(variant: Variant) -> None:
    """Every trainable parameter gets a finite, not all-zero gradient in training mode.

    The loss is a random projection of the logits and of ``forward_features`` (all tokens).

    Parameters are jittered first, so a zero-initialised gate (ReZero, zero-init projections)
    does not make the branch behind it look disconnected; a detached parameter still gets none.
    """
    model = variant.build().train()
    with seeded(3), torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(torch.randn_like(p) * 1e-2)
    x = example_input(model)
    # the tokens as well as the logits: with class-token pooling the last block's patch-token
    # outputs never reach the logits, and whatever only they depend on would look disconnected
    outputs = tensors_of(model(x))
    if not outputs:
        raise fail(variant, "the training forward returned no tensor")
    outputs += tensors_of(model.forward_features(x))
    with seeded(5):
        loss = sum((o.float() * torch.randn_like(o, dtype=torch.float32)).sum() for o in outputs)
    loss.backward()
    missing, bad, zero = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            missing.append(name)
        elif not torch.isfinite(p.grad).all():
            bad.append(name)
        elif not p.grad.any():
            zero.append(name)
    problems = [
        f"{label}: {names[:6]}{' ...' if len(names) > 6 else ''}"
        for label, names in (("no gradient", missing), ("non-finite", bad), ("all-zero", zero))
        if names
    ]
    if problems:
        raise fail(variant, "gradients do not reach every parameter; " + "; ".join(problems))


def check_state_dict_roundtrip(variant: Variant) -> None:
    """A differently initialised build that loads the state_dict (strict) gives the same output."""
    model, fresh = variant.build(seed=0), variant.build(seed=1)
    try:
        fresh.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise fail(variant, f"load_state_dict(strict=True) failed: {exc}") from None
    x = example_input(model)
    assert_same(variant, "output after state_dict round trip", forward(fresh, x), forward(model, x))


def check_checkpoint_roundtrip(variant: Variant) -> None:
    """``vitzoo.save`` then ``vitzoo.load`` rebuilds the model from its spec with equal output."""
    model = variant.build(seed=0)
    x = example_input(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(model, Path(tmp) / "model.safetensors")
        with seeded(1):
            loaded = load_checkpoint(path, system=variant.system).eval()
    assert_same(
        variant, "output after checkpoint round trip", forward(loaded, x), forward(model, x)
    )


def check_deepcopy(variant: Variant) -> None:
    """``copy.deepcopy`` gives an independent model with the same output."""
    model = variant.build()
    try:
        clone = copy.deepcopy(model)
    except Exception as exc:
        raise fail(variant, f"copy.deepcopy failed: {type(exc).__name__}: {exc}") from None
    shared = [
        name
        for (name, p), q in zip(model.named_parameters(), clone.parameters(), strict=False)
        if p.data_ptr() == q.data_ptr()
    ]
    if shared:
        raise fail(variant, f"the deep copy shares parameter storage: {shared[:5]}")
    x = example_input(model)
    assert_same(variant, "output of the deep copy", forward(clone, x), forward(model, x))


def check_float32_forward(variant: Variant) -> None:
    """float32 in, float32 out."""
    model = variant.build()
    out = forward(model, example_input(model, dtype=torch.float32))
    wrong = [t for t in tensors_of(out) if t.dtype != torch.float32]
    if wrong or not tensors_of(out):
        raise fail(variant, f"float32 input gave {describe(out)}")


def check_bfloat16_forward(variant: Variant) -> None:
    """The model cast to bfloat16 runs on bfloat16 input, giving finite bfloat16 logits."""
    model = variant.build().to(torch.bfloat16)
    x = example_input(model, dtype=torch.bfloat16)
    try:
        out = forward(model, x)
    except RuntimeError as exc:
        raise fail(variant, f"bfloat16 forward of {describe(x)} failed: {exc}") from None
    wrong = [t for t in tensors_of(out) if t.dtype != torch.bfloat16]
    if wrong or not tensors_of(out):
        raise fail(variant, f"bfloat16 model and input gave {describe(out)}")
    assert_logits(variant, out, BATCH, model.num_classes, "bfloat16 forward")
    assert_finite(variant, out, "bfloat16 forward")


def check_batch_size_one(variant: Variant) -> None:
    """A batch of one works in eval mode."""
    model = variant.build()
    out = forward(model, example_input(model, 1))
    assert_logits(variant, out, 1, model.num_classes, "batch of one")


def check_features_and_head(variant: Variant) -> None:
    """forward_head(forward_features(x)) == forward(x); pre_logits gives (B, num_features)."""
    model = variant.build()
    x = example_input(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        full = model(x)
    width = model.num_features
    if not isinstance(pre, torch.Tensor) or tuple(pre.shape) != (BATCH, width):
        raise fail(
            variant,
            f"forward_head(features {describe(feats)}, pre_logits=True) should be "
            f"{(BATCH, width)} (num_features={width}), got {describe(pre)}",
        )
    assert_same(variant, "forward_head(forward_features(x)) vs forward(x)", logits, full)


def check_reset_classifier(variant: Variant) -> None:
    """reset_classifier(0) gives num_features-wide features; reset_classifier(7) gives 7 logits."""
    model = variant.build()
    x = example_input(model)
    model.reset_classifier(0)
    out = forward(model, x)
    assert_logits(variant, out, BATCH, model.num_features, "after reset_classifier(0)")
    model.reset_classifier(7)
    if model.num_classes != 7:
        raise fail(variant, f"reset_classifier(7) left num_classes={model.num_classes}")
    assert_logits(variant, forward(model, x), BATCH, 7, "after reset_classifier(7)")


def check_attention_maps(variant: Variant) -> None:
    """``record_attention`` collects a finite, row-stochastic map per attention module, harmlessly."""
    model = variant.build()
    modules = attention_modules(model)
    if not modules:
        raise SkipTest(f"{variant.id}: the model has no AttentionBase modules")
    x = example_input(model)
    reference = forward(model, x)
    with record_attention(model) as maps:
        recorded = forward(model, x)
    assert_same(variant, "output while recording attention", recorded, reference)
    missing = [name for name, _ in modules if name not in maps]
    if missing:
        raise fail(
            variant,
            f"attention modules stored no map: {missing[:5]}; compute weights through "
            "self.attend(...) so record_attention sees them",
        )
    for name, module in modules:
        weights = maps[name]
        # windowed / factorised attention folds windows or frames into the batch axis
        if weights.ndim != 4 or weights.shape[0] % BATCH:
            raise fail(
                variant,
                f"map of {name} should be (B * windows, heads, Nq, Nk) with B={BATCH}, "
                f"got {describe(weights)}",
            )
        assert_finite(variant, weights, f"attention map of {name}")
        if module.needs_matrix:
            continue  # weights mixed after the softmax (talking heads ...) need not sum to 1
        sums = weights.float().sum(-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            worst = float((sums - 1).abs().max())
            raise fail(variant, f"rows of the map of {name} do not sum to 1 (off by {worst:.3g})")


@slow
def check_torch_compile(variant: Variant) -> None:
    """``torch.compile`` (backend :data:`COMPILE_BACKEND`) gives the eager output."""
    if "no-compile" in variant.tags:
        raise SkipTest(f"{variant.id} is tagged no-compile: {variant.entry.summary}")
    import torch._dynamo

    model = variant.build()
    x = example_input(model)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend=COMPILE_BACKEND)
        out = forward(compiled, x)
    except Exception as exc:
        raise fail(variant, f"torch.compile failed: {type(exc).__name__}: {exc}") from None
    finally:
        torch._dynamo.reset()
    assert_same(variant, "compiled output", out, forward(model, x))


@register_check_generator(*MODEL_KINDS)
def yield_model_checks(variant: Variant) -> Iterator[Check]:
    yield check_builds_from_yaml
    yield check_spec_roundtrip
    yield check_output_shape
    yield check_no_nan_inf
    yield check_deterministic_eval
    yield check_batch_independence
    yield check_gradients_flow
    yield check_state_dict_roundtrip
    yield check_checkpoint_roundtrip
    yield check_deepcopy
    yield check_float32_forward
    yield check_bfloat16_forward
    yield check_batch_size_one
    yield check_features_and_head
    yield check_reset_classifier
    yield from feature_checks_for(variant)
    yield check_attention_maps
    yield check_torch_compile


# --------------------------------------------------------------------------------------------
# Kind-specific checks
# --------------------------------------------------------------------------------------------
def _first_attention_call(model: nn.Module) -> tuple[nn.Module, torch.Tensor]:
    """The outermost attention module and the (B, N, D) tokens it sees in a real forward."""
    name, module = attention_modules(model)[0]
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        forward(model, example_input(model))
    finally:
        handle.remove()
    if not seen:
        raise AssertionError(f"attention module {name} was never called")
    return module, seen[0]


def check_key_padding_mask(variant: Variant) -> None:
    """Keys masked out by a (B, N) key-padding mask do not influence the other tokens."""
    model = variant.build()
    if not attention_modules(model):
        raise fail(variant, "the host model contains no AttentionBase module of this variant")
    attn, x = _first_attention_call(model)
    n = x.shape[1]
    keep = n - max(1, n // 4)
    mask = torch.ones(x.shape[0], n, dtype=torch.bool)
    mask[:, keep:] = False
    changed = x.clone()
    with seeded(11):
        changed[:, keep:] = torch.randn_like(changed[:, keep:]) * 3.0
    with torch.no_grad():
        out, out_changed = attn(x, mask=mask), attn(changed, mask=mask)
    assert_same(
        variant,
        f"tokens [:{keep}] of {describe(x)} after changing the masked keys [{keep}:]",
        out_changed[:, :keep],
        out[:, :keep],
    )


def _host_image_size(variant: Variant, model: dict[str, Any]) -> Any:
    if "image_size" in model:
        return model["image_size"]
    fields = resolved_config(variant.system.registry, "architecture", model["type"]).model_fields
    return fields["image_size"].default if "image_size" in fields else None


def check_rejects_indivisible_size(variant: Variant) -> None:
    """An image size the patch size does not divide is a SpecError at validation, not in torch."""
    fields = variant.entry.config.model_fields
    if "patch_size" not in fields:
        raise SkipTest(f"{variant.id}: config has no patch_size")
    patch = variant.entry.example.get("config", {}).get("patch_size", fields["patch_size"].default)
    if all(p == 1 for p in (patch if isinstance(patch, list | tuple) else [patch])):
        raise SkipTest(f"{variant.id}: patch size 1 divides every image size")
    data = variant.tiny_spec_data()
    size = _host_image_size(variant, data["model"])
    if size is None:
        raise SkipTest(f"{variant.id}: the host model has no image_size")
    bad = size + 1 if isinstance(size, int) else [s + 1 for s in size]
    data["model"]["image_size"] = bad
    try:
        # the component's own rule must catch it (the trial build's message is generic)
        validate_spec(variant.system.registry, data)
    except SpecError:
        return
    except Exception as exc:
        raise fail(
            variant,
            f"image_size {bad} with patch_size {patch} raised {type(exc).__name__} instead of "
            f"a SpecError: {exc}",
        ) from None
    raise fail(
        variant,
        f"image_size {bad} with patch_size {patch} validated; it must be a SpecError naming "
        "the patch size (use vitzoo.components.patchify.check_divisible in the config's check)",
    )


@register_check_generator("attention")
def yield_attention_checks(variant: Variant) -> Iterator[Check]:
    if "mask" in variant.tags:
        yield check_key_padding_mask


@register_check_generator("patchifier")
def yield_patchifier_checks(variant: Variant) -> Iterator[Check]:
    yield check_rejects_indivisible_size
