"""Running checks without pytest: ``check_variant`` (scikit-learn's ``check_estimator``) and
``run_checks``, which ``vitzoo check [PLUGIN]`` turns into a table."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from unittest import SkipTest

from vitzoo.plugins import PluginSystem
from vitzoo.testing.checks import is_slow, yield_checks
from vitzoo.testing.variants import Variant, variants

Status = Literal["passed", "failed", "xfail", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one variant."""

    variant: str  #: ``kind:name``
    check: str  #: the check function's name
    status: Status
    message: str = ""
    seconds: float = 0.0
    plugin: str = ""


class ExpectedFailurePassed(AssertionError):
    """A check declared in ``expected_failed_checks`` passed (strict, like pytest's xfail)."""


def _run_one(
    variant: Variant, check: Callable[[Variant], None]
) -> tuple[Status, str, Exception | None]:
    try:
        check(variant)
    except SkipTest as exc:
        return "skipped", str(exc), None
    except AssertionError as exc:
        return "failed", str(exc), exc
    except Exception as exc:  # a crash is a failure too; name the exception type
        return "failed", f"{variant.id}: {type(exc).__name__}: {exc}", exc
    return "passed", "", None


def check_variant(
    variant: Variant,
    *,
    expected_failed_checks: Mapping[str, str] | None = None,
    on_fail: Literal["raise", "collect"] = "raise",
    include_slow: bool = False,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every check that applies to ``variant``.

    ``expected_failed_checks`` maps check names to the reason they are known to fail: such a
    check failing is ``"xfail"``, and passing is a failure (the entry is stale). With
    ``on_fail="raise"`` the first unexpected failure is re-raised; with ``"collect"`` every
    result is returned. Slow checks (``torch.compile``) are reported as skipped unless
    ``include_slow``. ``on_result`` sees each result as it is produced (for live progress).
    """
    if on_fail not in ("raise", "collect"):
        raise ValueError(f"on_fail must be 'raise' or 'collect', got {on_fail!r}")
    # the variant's own declaration (``known_failures=`` at registration) plus the caller's
    expected = {
        **dict(getattr(variant.entry, "known_failures", None) or {}),
        **dict(expected_failed_checks or {}),
    }
    results: list[CheckResult] = []
    for check in yield_checks(variant):
        name = check.__name__
        start = time.perf_counter()
        error: Exception | None = None
        if is_slow(check) and not include_slow:
            status: Status = "skipped"
            message = "slow check (pass include_slow=True / --slow to run it)"
        else:
            status, message, error = _run_one(variant, check)
            if name in expected:
                reason = expected[name]
                if status == "failed":
                    status, message = "xfail", f"known failure ({reason}): {message}"
                elif status == "passed":
                    status = "failed"
                    message = (
                        f"{variant.id}: {name} is declared a known failure ({reason}) but passed"
                    )
                    error = ExpectedFailurePassed(message)
        result = CheckResult(
            variant.id, name, status, message, time.perf_counter() - start, variant.plugin
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
        if status == "failed" and on_fail == "raise" and error is not None:
            raise error
    return results


def run_checks(
    plugin: str | None = None,
    kind: str | None = None,
    include_slow: bool = False,
    *,
    expected_failed_checks: Mapping[str, Mapping[str, str]] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    system: PluginSystem | None = None,
) -> list[CheckResult]:
    """Every check on every variant of ``plugin`` (all plugins when ``None``) and ``kind``.

    Discovery errors (the plugin is missing, failed to load, or registered nothing) propagate;
    check failures are collected. ``expected_failed_checks`` is keyed by variant id then check.
    ``system`` defaults to a fresh one (see :func:`vitzoo.testing.variants`).
    """
    known = dict(expected_failed_checks or {})
    results: list[CheckResult] = []
    for variant in variants(plugin, kind, system=system):
        results.extend(
            check_variant(
                variant,
                expected_failed_checks=known.get(variant.id),
                on_fail="collect",
                include_slow=include_slow,
                on_result=on_result,
            )
        )
    return results
