"""Each conformance check fails on the bug it targets and passes on the working original.

The broken variants live in ``tests/broken_components.py`` and are registered by hand as the
plugin ``broken`` next to the core and the ``vit`` plugin only, so other plugins cannot affect
these tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import broken_components
import pytest
import vitzoo_plugins.vit

from vitzoo.plugins import load_plugins
from vitzoo.testing import (
    check_variant,
    checks,
    feature_checks,
    model_checks,
    parametrize_with_checks,
    run_checks,
    variants,
)
from vitzoo.testing.variants import Variant, VariantError

pytest_plugins = ["pytester"]

#: (broken variant id, the check that must catch it, the good variant it must pass on)
TARGETS: list[tuple[str, str, str]] = [
    ("attention:mixes-batch", "check_batch_independence", "attention:mhsa"),
    ("attention:detached-gate", "check_gradients_flow", "attention:mhsa"),
    ("attention:returns-nan", "check_no_nan_inf", "attention:mhsa"),
    ("attention:noisy-eval", "check_deterministic_eval", "attention:mhsa"),
    ("attention:ignores-mask", "check_key_padding_mask", "attention:mhsa"),
    ("attention:random-buffer", "check_state_dict_roundtrip", "attention:mhsa"),
    ("attention:random-buffer", "check_checkpoint_roundtrip", "attention:mhsa"),
    ("attention:reinit-on-copy", "check_deepcopy", "attention:mhsa"),
    ("attention:float32-offset", "check_bfloat16_forward", "attention:mhsa"),
    ("attention:own-softmax", "check_attention_maps", "attention:mhsa"),
    ("attention:drifting-spec", "check_spec_roundtrip", "attention:mhsa"),
    ("attention:loose-config", "check_registration_metadata", "attention:mhsa"),
    ("patchifier:unchecked-patch", "check_rejects_indivisible_size", "patchifier:linear"),
    ("pooling:keeps-token-axis", "check_output_shape", "pooling:cls"),
    ("architecture:scaled-forward", "check_features_and_head", "architecture:vit"),
    ("architecture:no-intermediates", "check_forward_intermediates", "architecture:vit"),
    ("architecture:wrapping-indices", "check_feature_indices_refused", "architecture:vit"),
    ("architecture:frozen-grid-maps", "check_feature_maps_at_two_sizes", "architecture:vit"),
    ("architecture:keeps-head", "check_features_only", "architecture:vit"),
]


@pytest.fixture(scope="module")
def zoo() -> dict[str, Variant]:
    system = load_plugins(
        entrypoints=False,
        extra=[("vit", vitzoo_plugins.vit), ("broken", broken_components)],
        strict=True,
    )
    return {v.id: v for v in variants(system=system)}


@pytest.mark.parametrize(("broken", "check_name", "good"), TARGETS, ids=[t[0] for t in TARGETS])
def test_check_catches_its_bug(
    zoo: dict[str, Variant], broken: str, check_name: str, good: str
) -> None:
    check = next(
        getattr(module, check_name)
        for module in (checks, model_checks, feature_checks)
        if hasattr(module, check_name)
    )
    check(zoo[good])
    with pytest.raises(AssertionError, match=broken):
        check(zoo[broken])


def test_every_target_check_is_yielded_for_its_variant(zoo: dict[str, Variant]) -> None:
    for broken, check_name, _ in TARGETS:
        assert check_name in [c.__name__ for c in checks.yield_checks(zoo[broken])], broken


def test_good_variants_pass_every_check(zoo: dict[str, Variant]) -> None:
    for good in {t[2] for t in TARGETS}:
        results = check_variant(zoo[good], on_fail="collect")
        assert {r.status for r in results} <= {"passed", "skipped"}, [
            r for r in results if r.status not in {"passed", "skipped"}
        ]


def test_check_variant_collects_raises_and_xfails(zoo: dict[str, Variant]) -> None:
    broken = zoo["attention:mixes-batch"]
    results = {r.check: r for r in check_variant(broken, on_fail="collect")}
    assert results["check_batch_independence"].status == "failed"
    assert "attention:mixes-batch" in results["check_batch_independence"].message
    assert results["check_torch_compile"].status == "skipped"  # slow, not included
    with pytest.raises(AssertionError, match="sample 0"):
        check_variant(broken)
    known = {"check_batch_independence": "mixes samples on purpose"}
    statuses = {r.check: r.status for r in check_variant(broken, expected_failed_checks=known)}
    assert statuses["check_batch_independence"] == "xfail"
    stale = {"check_output_shape": "not actually broken"}
    with pytest.raises(AssertionError, match="declared a known failure"):
        check_variant(broken, expected_failed_checks=stale)


def test_run_checks_collects_results_for_the_cli(zoo: dict[str, Variant]) -> None:
    system = zoo["pooling:cls"].system
    seen: list[str] = []
    results = run_checks(
        "broken", "pooling", system=system, on_result=lambda r: seen.append(r.check)
    )
    assert {r.variant for r in results} == {"pooling:keeps-token-axis"}
    assert seen == [r.check for r in results]
    by_check = {r.check: r for r in results}
    shape = by_check["check_output_shape"]
    assert shape.status == "failed" and "(2, 10)" in shape.message and shape.seconds >= 0
    assert shape.plugin == "broken"
    assert by_check["check_registration_metadata"].status == "passed"


def test_variants_for_a_plugin_that_registered_nothing_fails() -> None:
    system = load_plugins(entrypoints=False, extra=[("empty", object())], strict=True)
    with pytest.raises(VariantError, match="registered nothing"):
        variants(plugin="empty", system=system)
    with pytest.raises(VariantError, match="no plugin named"):
        variants(plugin="not-installed", system=system)


def test_parametrize_rejects_unknown_expected_failures(zoo: dict[str, Variant]) -> None:
    with pytest.raises(ValueError, match="unknown"):
        parametrize_with_checks([zoo["attention:mhsa"]], expected_failed_checks={"attention:x": {}})
    with pytest.raises(ValueError, match="check_nope"):
        parametrize_with_checks(
            [zoo["attention:mhsa"]], expected_failed_checks={"attention:mhsa": {"check_nope": "?"}}
        )


TEST_MODULE = """
import broken_components
import vitzoo_plugins.vit

from vitzoo.plugins import load_plugins
from vitzoo.testing import parametrize_with_checks, variants

SYSTEM = load_plugins(
    entrypoints=False,
    extra=[("vit", vitzoo_plugins.vit), ("broken", broken_components)],
    strict=True,
)
VARIANTS = [v for v in variants("broken", "attention", system=SYSTEM) if v.name == "mixes-batch"]
KNOWN = {"attention:mixes-batch": {"check_batch_independence": "mixes samples on purpose"}}


@parametrize_with_checks(VARIANTS, expected_failed_checks=KNOWN)
def test_known(variant, check):
    check(variant)


@parametrize_with_checks(VARIANTS)
def test_unknown(variant, check):
    check(variant)


def test_fixture(vitzoo_system):
    assert ("architecture", "vit") in vitzoo_system.registry
"""


def test_pytest_plugin_and_parametrize(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VITZOO_LOAD_PLUGINS", "vit")  # the fixture loads only this entry point
    pytester.makepyfile(
        broken_components=Path(broken_components.__file__).read_text(encoding="utf-8"),
        test_zoo=TEST_MODULE,
    )
    result = pytester.runpytest_subprocess(
        "--strict-markers",  # the slow marker must be registered by the plugin
        "-p",
        "no:cacheprovider",
        "-k",
        "batch_independence or fixture or (test_known and torch_compile)",
    )
    result.assert_outcomes(passed=2, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*test_unknown?attention:mixes-batch-check_batch_independence*"])
    collected = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--collect-only", "-q", "-m", "slow"
    )
    ids = [line for line in collected.outlines if "::" in line]
    # the slow checks are torch.compile and ONNX Runtime, for each of the two test functions
    slow = sorted(i.rsplit("-", 1)[-1].rstrip("]") for i in ids)
    assert slow == ["check_onnx_runtime"] * 2 + ["check_torch_compile"] * 2, ids


def test_pytest_plugin_is_import_light() -> None:
    """pytest loads the plugin in every run of the environment: it must not pull in torch."""
    code = (
        "import sys, vitzoo.testing.pytest_plugin, vitzoo.testing; "
        "heavy = [m for m in ('torch', 'vitzoo_plugins') if m in sys.modules]; "
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
