"""The conformance suite's core: what a check is, how checks are chosen, the shared assertions.

A check is a plain function ``check_xxx(variant)`` usable without pytest: it builds the variant's
CPU-tiny model (see :mod:`vitzoo.testing.variants`), runs one property and raises
:class:`AssertionError` naming the variant, the shapes and the dtypes when the property does not
hold. A check that does not apply raises :class:`unittest.SkipTest` with the reason (pytest
reports it as skipped).

Which checks a variant gets is decided by *check generators* registered per kind
(:func:`register_check_generator`), in the spirit of scikit-learn's ``_yield_*_checks``. This
module holds the registry, the helpers every check module asserts with, and the registration
checks every kind gets. The checks themselves live beside it, one module per job, imported on
first use (:data:`CHECK_MODULES`) so this module knows none of them:
:mod:`~vitzoo.testing.model_checks` (every component and architecture, with
:mod:`~vitzoo.testing.feature_checks` for feature maps), :mod:`~vitzoo.testing.objective_checks`,
:mod:`~vitzoo.testing.export_checks` and :mod:`~vitzoo.testing.contract`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from vitzoo.registry import COMPONENT_KINDS
from vitzoo.spec import resolved_config, validate_spec
from vitzoo.testing.variants import Variant

Check = Callable[[Variant], None]
CheckGenerator = Callable[[Variant], Iterable[Check]]

#: Kinds whose variants make a model (a component in a host, or an architecture).
MODEL_KINDS: tuple[str, ...] = (*COMPONENT_KINDS, "architecture")
#: Modules that register check generators when imported (looked up on first use). Their order
#: is the order of the checks a variant gets, whichever of them was imported first: a test that
#: imports one directly must not reorder the suite's test ids.
CHECK_MODULES: tuple[str, ...] = (
    "vitzoo.testing.model_checks",
    "vitzoo.testing.objective_checks",
    "vitzoo.testing.export_checks",
    "vitzoo.testing.contract",
    "vitzoo.testing.preset_checks",
    "vitzoo.testing.packed_checks",
)
BATCH = 2

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
    for name in CHECK_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def _module_rank(generator: CheckGenerator) -> int:
    """Where the generator's module stands in :data:`CHECK_MODULES` (this module first; a
    third party's after all of them, in the order they registered)."""
    module = generator.__module__
    if module == __name__:
        return -1
    return CHECK_MODULES.index(module) if module in CHECK_MODULES else len(CHECK_MODULES)


def yield_checks(variant: Variant) -> Iterator[Check]:
    """Every check that applies to ``variant``, in a stable order, without duplicates."""
    _load_extensions()
    seen: set[str] = set()
    for bucket in ("*", variant.kind):
        for generator in sorted(_GENERATORS.get(bucket, []), key=_module_rank):
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
