"""The conformance checks: plain functions ``check_xxx(variant)`` usable without pytest.

Each check builds the variant's CPU-tiny model (see :mod:`vitzoo.testing.variants`), runs one
property and raises :class:`AssertionError` naming the variant, the shapes and the dtypes when the
property does not hold. A check that does not apply raises :class:`unittest.SkipTest` with the
reason (pytest reports it as skipped).

Which checks a variant gets is decided by *check generators* registered per kind
(:func:`register_check_generator`), in the spirit of scikit-learn's ``_yield_*_checks``: model
checks for every component and architecture, extras for attention (key-padding mask) and
patchifiers (indivisible image size), and registration checks for every kind. Other modules add
generators for their kinds; :data:`EXTENSION_MODULES` (``vitzoo.testing.objective_checks``) are
imported on first use so objectives get their checks without this module knowing them.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import SkipTest

import torch
from torch import nn

from vitzoo.builder import build_from_spec
from vitzoo.checkpoint import load as load_checkpoint
from vitzoo.checkpoint import save as save_checkpoint
from vitzoo.introspection import attention_modules, record_attention
from vitzoo.registry import COMPONENT_KINDS
from vitzoo.spec import (
    SpecError,
    load_spec_file,
    parse_yaml,
    resolved_config,
    spec_to_dict,
    spec_to_yaml,
    validate_spec,
)
from vitzoo.testing.variants import Variant

Check = Callable[[Variant], None]
CheckGenerator = Callable[[Variant], Iterable[Check]]

#: Kinds whose variants make a model (a component in a host, or an architecture).
MODEL_KINDS: tuple[str, ...] = (*COMPONENT_KINDS, "architecture")
#: Modules that register more check generators when imported (looked up on first use).
EXTENSION_MODULES: tuple[str, ...] = (
    "vitzoo.testing.objective_checks",
    "vitzoo.testing.export_checks",
    "vitzoo.testing.contract",
    "vitzoo.testing.preset_checks",
)
#: The backend of the compile check: ``aot_eager`` traces with dynamo and AOTAutograd (where
#: graph breaks and unsupported ops show up) without inductor's C++ code generation, which
#: would take minutes per model on CPU.
COMPILE_BACKEND = "aot_eager"
BATCH = 2
#: Kinds that get the backbone checks: every architecture, and the components whose behaviour
#: depends on the token grid (a host ViT must still give maps at another input size).
BACKBONE_CHECK_KINDS: frozenset[str] = frozenset(
    {"architecture", "patchifier", "posenc", "attention", "block"}
)

_GENERATORS: dict[str, list[CheckGenerator]] = {}
_extensions_loaded = False


# --------------------------------------------------------------------------------------------
# Choosing checks
# --------------------------------------------------------------------------------------------
def register_check_generator(*kinds: str) -> Callable[[CheckGenerator], CheckGenerator]:
    """Decorator: ``generator(variant)`` yields the checks for variants of ``kinds`` ("*": all)."""

    def decorate(generator: CheckGenerator) -> CheckGenerator:
        for kind in kinds:
            bucket = _GENERATORS.setdefault(kind, [])
            if generator not in bucket:
                bucket.append(generator)
        return generator

    return decorate


def _load_extensions() -> None:
    global _extensions_loaded
    if _extensions_loaded:
        return
    _extensions_loaded = True
    for name in EXTENSION_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def yield_checks(variant: Variant) -> Iterator[Check]:
    """Every check that applies to ``variant``, in a stable order, without duplicates."""
    _load_extensions()
    seen: set[str] = set()
    for generator in [*_GENERATORS.get("*", []), *_GENERATORS.get(variant.kind, [])]:
        for check in generator(variant):
            if check.__name__ not in seen:
                seen.add(check.__name__)
                yield check


def slow(check: Check) -> Check:
    """Mark a check as slow: pytest gets the ``slow`` marker, ``check_variant`` skips it by default."""
    check.vitzoo_slow = True  # type: ignore[attr-defined]
    return check


def is_slow(check: Check) -> bool:
    return bool(getattr(check, "vitzoo_slow", False))


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def describe(value: Any) -> str:
    """``Tensor(shape=(2, 10), dtype=float32)``, or the same for each item of a tuple/list."""
    if isinstance(value, torch.Tensor):
        return (
            f"Tensor(shape={tuple(value.shape)}, dtype={str(value.dtype).removeprefix('torch.')})"
        )
    if isinstance(value, tuple | list):
        inner = ", ".join(describe(v) for v in value)
        return f"{type(value).__name__}[{inner}]"
    return type(value).__name__


def tensors_of(value: Any) -> list[torch.Tensor]:
    """The tensors in a model output (a tensor, or a tuple/list of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for v in value for t in tensors_of(v)]
    return []


def fail(variant: Variant, message: str) -> AssertionError:
    return AssertionError(f"{variant.id} (plugin {variant.plugin!r}): {message}")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for the block without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def example_input(
    model: nn.Module, batch: int = BATCH, *, seed: int = 1, dtype: torch.dtype | None = None
) -> torch.Tensor:
    with seeded(seed):
        return model.example_input(batch, dtype=dtype)


def forward(model: nn.Module, x: torch.Tensor) -> Any:
    with torch.no_grad():
        return model(x)


def assert_same(
    variant: Variant,
    what: str,
    actual: Any,
    expected: Any,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    got, want = tensors_of(actual), tensors_of(expected)
    if len(got) != len(want):
        raise fail(variant, f"{what}: got {describe(actual)}, expected {describe(expected)}")
    for a, b in zip(got, want, strict=True):
        try:
            torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
        except AssertionError as exc:
            detail = str(exc).strip().splitlines()
            raise fail(
                variant, f"{what}: {describe(a)} differs from {describe(b)}; {' '.join(detail[:3])}"
            ) from None


def assert_logits(variant: Variant, out: Any, batch: int, classes: int, where: str) -> None:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, classes):
        raise fail(
            variant, f"{where}: expected a Tensor of shape {(batch, classes)}, got {describe(out)}"
        )


def assert_finite(variant: Variant, out: Any, where: str) -> None:
    for t in tensors_of(out):
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise fail(variant, f"{where}: {bad} non-finite values (NaN/Inf) in {describe(t)}")


# --------------------------------------------------------------------------------------------
# Checks for every kind
# --------------------------------------------------------------------------------------------
def check_registration_metadata(variant: Variant) -> None:
    """Summary given; config forbids unknown keys, is frozen and is tagged ``type: <name>``."""
    entry = variant.entry
    config = entry.config
    if not entry.summary.strip():
        raise fail(variant, "has no summary (pass summary= or give the factory a docstring)")
    if config.model_config.get("extra") != "forbid":
        raise fail(variant, f"config {config.__name__} must forbid unknown keys (extra='forbid')")
    if config.model_config.get("frozen") is not True:
        raise fail(variant, f"config {config.__name__} must be frozen")
    default = config.model_fields["type"].default
    if default != variant.name:
        raise fail(variant, f"config {config.__name__}.type defaults to {default!r}")


def check_validates_from_defaults(variant: Variant) -> None:
    """The config with no overrides validates (architectures: as a whole spec, with its rules).

    Validated only, not built: full-size architectures are built by the presets' test (on
    meta), and every tiny example is built by the model checks.
    """
    registry = variant.system.registry
    try:
        if variant.kind == "architecture":
            # full size: type-checked only (a trial build of every default costs minutes)
            validate_spec(registry, {"model": {"type": variant.name}})
        else:
            # fields without a default (an objective's teacher) come from the example
            config = resolved_config(registry, variant.kind, variant.name)
            given = dict(variant.entry.example.get("config", {}))
            required = {
                k: given[k]
                for k, f in config.model_fields.items()
                if f.is_required() and k in given
            }
            config.model_validate({"type": variant.name, **required})
    except Exception as exc:
        raise fail(variant, f"the default config does not validate: {exc}") from None


@register_check_generator("*")
def yield_registration_checks(variant: Variant) -> Iterator[Check]:
    if variant.kind == "preset":  # a spec, not a config class: vitzoo.testing.preset_checks
        return
    yield check_registration_metadata
    yield check_validates_from_defaults


# --------------------------------------------------------------------------------------------
# Model checks (components in a host model, and architectures)
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


def check_forward_intermediates(variant: Variant) -> None:
    """``forward_intermediates`` gives final features and a non-empty list of per-layer outputs."""
    model = variant.build()
    x = example_input(model)
    with torch.no_grad():
        result = model.forward_intermediates(x)
        last = model.forward_intermediates(x, indices=[-1])
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list)):
        raise fail(
            variant, f"forward_intermediates should return (final, [..]), got {describe(result)}"
        )
    final, layers = result
    if not layers:
        raise fail(variant, "forward_intermediates returned no intermediate outputs")
    for i, t in enumerate([final, *layers]):
        if not isinstance(t, torch.Tensor) or t.shape[0] != BATCH:
            raise fail(variant, f"intermediate {i} should be a batch-{BATCH} Tensor: {describe(t)}")
        assert_finite(variant, t, f"intermediate {i}")
    if len(last[1]) != 1:
        raise fail(
            variant, f"forward_intermediates(indices=[-1]) gave {len(last[1])} outputs, not 1"
        )


# -- backbone checks (feature maps for dense prediction) -----------------------------------------
#: Second input sizes tried by :func:`check_feature_maps_at_two_sizes`: (H + k*r, W + 2*k*r)
#: for these k, r the largest reduction -- a taller-than-wide change of aspect, the first size
#: the spec accepts (windows may need larger steps).
SIZE_STEPS: tuple[int, ...] = (1, 2, 4, 8)


def _feature_layer_count(variant: Variant, model: nn.Module) -> int:
    try:
        names = model.feature_layer_names()
    except NotImplementedError as exc:
        raise fail(variant, f"declares no feature layers: {exc}") from None
    if not names:
        raise fail(variant, "feature_layer_names() is empty: nothing to take feature maps from")
    return len(names)


def _assert_maps_match_info(
    variant: Variant, maps: Any, info: Any, input_shape: tuple[int, ...], where: str
) -> None:
    if not isinstance(maps, list) or len(maps) != len(info):
        raise fail(variant, f"{where}: expected {len(info)} feature maps, got {describe(maps)}")
    height, width = input_shape[-2:]
    for fmap, entry in zip(maps, info, strict=True):
        name, chs, red = entry["module"], entry["num_chs"], entry["reduction"]
        if not isinstance(fmap, torch.Tensor) or fmap.ndim < 4 or fmap.shape[0] != input_shape[0]:
            raise fail(variant, f"{where}: {name} should give a (B, C, H, W) map: {describe(fmap)}")
        if fmap.shape[1] != chs:
            raise fail(
                variant, f"{where}: {name} has {fmap.shape[1]} channels, feature_info says {chs}"
            )
        h, w = fmap.shape[-2:]
        if abs(h - height / red) > 1 or abs(w - width / red) > 1:
            raise fail(
                variant,
                f"{where}: {name} is {h}x{w} for a {height}x{width} input, not at the declared "
                f"reduction {red} (expected about {height / red:.1f}x{width / red:.1f})",
            )
        assert_finite(variant, fmap, f"{where}: {name}")


def check_feature_maps_at_two_sizes(variant: Variant) -> None:
    """Feature maps have feature_info's channels and strides, at the built size and after
    ``set_input_size`` to another (non-square) one; ``NLC`` is the flattened ``NCHW``."""
    model = variant.build()
    count = _feature_layer_count(variant, model)
    info = model.feature_info
    for entry in info:
        try:
            model.get_submodule(entry["module"])
        except AttributeError:
            raise fail(
                variant, f"feature_info names module {entry['module']!r}, which does not exist"
            ) from None
    x = example_input(model)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
        tokens = model.forward_intermediates(
            x, indices=1, output_fmt="NLC", intermediates_only=True
        )
    _assert_maps_match_info(variant, maps, info, tuple(x.shape), "built size")
    _assert_maps_match_info(variant, normed, info, tuple(x.shape), "norm=True")
    assert_same(
        variant,
        "output_fmt='NLC' vs the flattened map",
        tokens[0],
        maps[-1].flatten(2).transpose(1, 2),
    )
    height, width = model.input_size[-2:]
    step = max(info.reduction())
    refused = []
    for k in SIZE_STEPS:
        size = (height + k * step, width + 2 * k * step)
        try:
            model.set_input_size(size, system=variant.system)
        except SpecError as exc:
            refused.append(f"{size}: {exc.issues[0].message if exc.issues else exc}")
            continue
        break
    else:
        raise fail(variant, f"set_input_size refused every size tried: {refused}")
    if tuple(model.input_size[-2:]) != size:
        raise fail(variant, f"set_input_size{size} left input_size={model.input_size}")
    x2 = example_input(model)
    with torch.no_grad():
        maps2 = model.forward_intermediates(x2, intermediates_only=True)
        logits = model(x2)
    _assert_maps_match_info(variant, maps2, info, tuple(x2.shape), f"after set_input_size{size}")
    assert_finite(variant, logits, f"forward after set_input_size{size}")
    if len(maps2) != count:
        raise fail(
            variant, f"after set_input_size the model has {len(maps2)} feature layers, not {count}"
        )


def check_features_only(variant: Variant) -> None:
    """``features_only`` backbones give the full model's maps, with the head kept (unpruned)
    and without it (pruned: head and unused tail layers gone); feature_info selects."""
    from vitzoo.components.features import FeatureExtractor

    model = variant.build()
    count = _feature_layer_count(variant, model)
    indices = list(range(count))[-2:]
    x = example_input(model)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=indices, intermediates_only=True)
    full = FeatureExtractor(variant.build(), indices, prune=False)
    pruned = FeatureExtractor(variant.build(), indices)
    for label, extractor in (("with the head", full), ("without the head", pruned)):
        got = forward(extractor, x)
        assert_same(variant, f"features_only maps {label}", got, expected)
        if extractor.feature_info != model.feature_info.select(indices):
            raise fail(variant, f"features_only feature_info {label} is {extractor.feature_info}")
    assert_logits(variant, forward(full.model, x), BATCH, model.num_classes, "unpruned backbone")
    head_params = sum(p.numel() for p in pruned.model.get_classifier().parameters())
    if head_params:
        raise fail(variant, f"the pruned backbone still has a {head_params}-parameter classifier")
    if sum(p.numel() for p in pruned.parameters()) > sum(p.numel() for p in model.parameters()):
        raise fail(variant, "pruning added parameters")


def check_feature_indices_refused(variant: Variant) -> None:
    """Out-of-range and repeated layer indices are a ValueError naming what is allowed; an int
    n means the last n layers and negative indices count from the end."""
    model = variant.build()
    n = _feature_layer_count(variant, model)
    x = example_input(model, 1)
    for bad in ([n], [-n - 1], [0, 0], [n - 1, -1], [], 0, n + 1):
        try:
            with torch.no_grad():
                model.forward_intermediates(x, indices=bad, intermediates_only=True)
        except ValueError:
            continue
        raise fail(variant, f"forward_intermediates(indices={bad!r}) with {n} layers was accepted")
    try:
        model.prune_intermediate_layers([n])
    except ValueError:
        pass
    else:
        raise fail(variant, f"prune_intermediate_layers([{n}]) with {n} layers was accepted")
    with torch.no_grad():
        last_n = model.forward_intermediates(x, indices=n, intermediates_only=True)
        last = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
    if len(last_n) != n:
        raise fail(variant, f"indices={n} (the last {n} layers) gave {len(last_n)} maps")
    assert_same(variant, "indices=[-1] vs the last of all maps", last, last_n[-1:])


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
    yield check_forward_intermediates
    if variant.kind in BACKBONE_CHECK_KINDS:
        yield check_feature_maps_at_two_sizes
        yield check_features_only
        yield check_feature_indices_refused
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
