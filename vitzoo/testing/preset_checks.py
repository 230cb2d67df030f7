"""Conformance checks for presets: every registered preset, a third party's too, is held to them.

A preset is a named full-size spec, so it has no tiny model to run like a component: its checks
are the ones a user's build would otherwise be the first to run. Registration checks only the
name, aliases, tags and that the spec has a ``model`` section, and ``vitzoo build PRESET``
trusts a bare preset (it skips the trial build), so a preset with an unknown attention type or
``num_heads: 5`` at ``dim: 192`` used to pass ``vitzoo plugins``, ``vitzoo check`` and
``parametrize_with_checks`` and fail only in a user's hands. Here each preset is:

* registered with a summary (what ``vitzoo list`` shows);
* valid: its fields, then the whole-spec rules, every problem located at the preset
  (``preset 'my-vit'  model.num_heads: ...``);
* written back to YAML and read again unchanged (what a checkpoint stores);
* trial-built on the meta device (:mod:`vitzoo.trial`: shapes only, one forward at batch 2,
  the same budget a user's spec gets), and when the registration declares ``expected_params``
  its count is exactly that (the reference code's count; for a preset with an objective: what
  the objective trains,
  as the pre-training papers count), and ``expected_macs`` within 5% where declared.

Imported on first use through :data:`vitzoo.testing.checks.EXTENSION_MODULES`, like the other
check modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vitzoo.rules import check_rules
from vitzoo.spec import SpecBase, SpecError, load_yaml, spec_to_yaml, validate_spec
from vitzoo.testing.checks import Check, fail, register_check_generator
from vitzoo.testing.variants import Variant
from vitzoo.trial import TrialReport, check_trial

#: Relative tolerances of the declared counts (the project's tests/test_presets.py uses these).
#: The reference's exact count (a paper's rounded figure is not a parameter count).
PARAMS_TOLERANCE = 0.0
MACS_TOLERANCE = 0.05


def _where(variant: Variant) -> str:
    return f"preset {variant.name!r}"


def preset_spec(variant: Variant) -> SpecBase:
    """The preset's validated spec, whole-spec rules included (cached on the variant)."""
    if "preset-spec" not in variant._cache:
        registry = variant.system.registry
        failed = [r.name for r in variant.system.failed]
        try:
            spec = validate_spec(registry, {"preset": variant.name}, failed_plugins=failed)
            check_rules(registry, spec, file=_where(variant))
        except SpecError as exc:
            raise fail(variant, f"its spec is not valid:\n{exc}") from None
        variant._cache["preset-spec"] = spec
    return variant._cache["preset-spec"]


def check_preset_registration(variant: Variant) -> None:
    """A summary, for ``vitzoo list`` (the name alone does not say what the preset is)."""
    if not variant.entry.summary.strip():
        raise fail(variant, "has no summary (pass summary= to register)")


def check_preset_validates(variant: Variant) -> None:
    """Fields and whole-spec rules: what a user's ``vitzoo build PRESET`` validates."""
    preset_spec(variant)


def check_preset_spec_roundtrip(variant: Variant) -> None:
    """spec -> YAML -> spec is exact, so a checkpoint of this preset rebuilds it."""
    spec = preset_spec(variant)
    text = spec_to_yaml(spec)
    try:
        again = validate_spec(variant.system.registry, load_yaml(text))
    except SpecError as exc:
        raise fail(variant, f"its spec written as YAML does not validate again: {exc}") from None
    if again != spec:
        raise fail(variant, f"its spec changes when written as YAML and read back:\n{text}")


def _trial(variant: Variant, macs: bool) -> TrialReport:
    spec = preset_spec(variant)
    try:
        report = check_trial(variant.system, spec, file=_where(variant), macs=macs)
    except SpecError as exc:
        raise fail(variant, f"does not build and run on the meta device:\n{exc}") from None
    if report is None:  # VITZOO_TRIAL_BUILD=0
        from unittest import SkipTest

        raise SkipTest("the trial build is turned off (VITZOO_TRIAL_BUILD=0)")
    return report


def _within(variant: Variant, what: str, counted: int, declared: int, tolerance: float) -> None:
    if abs(counted - declared) > tolerance * declared:
        raise fail(
            variant,
            f"{counted:,} {what} counted on the meta device, {declared:,} declared "
            + ("(exactly)" if not tolerance else f"(tolerance {tolerance:.0%})"),
        )


def check_preset_trial_build(variant: Variant) -> None:
    """It builds and runs on the meta device within the budget, and ``expected_params`` (when
    declared) matches: the model's parameters, or for a spec with an objective what the
    objective trains."""
    # MACs counted in the same trial when declared, so check_preset_macs finds it cached
    report = _trial(variant, macs=bool(variant.entry.expected_macs))
    declared = variant.entry.expected_params
    if declared is None:
        return
    has_objective = preset_spec(variant).objective is not None
    counted: Any = report.objective_trainable if has_objective else report.model_params
    if counted is None:
        counted = report.params
    _within(variant, "parameters", int(counted), int(declared), PARAMS_TOLERANCE)


def check_preset_macs(variant: Variant) -> None:
    """The declared ``expected_macs``: one image's forward at the preset's input size."""
    report = _trial(variant, macs=True)
    if report.macs is None:
        raise fail(variant, "its multiply-accumulates could not be counted on the meta device")
    _within(
        variant, "multiply-accumulates", report.macs, variant.entry.expected_macs, MACS_TOLERANCE
    )


@register_check_generator("preset")
def yield_preset_checks(variant: Variant) -> Iterator[Check]:
    yield check_preset_registration
    yield check_preset_validates
    yield check_preset_spec_roundtrip
    yield check_preset_trial_build
    if variant.entry.expected_macs:
        yield check_preset_macs
