"""``parametrize_with_checks``: one pytest test per (variant, check), ids ``kind:name-check``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vitzoo.testing.checks import is_slow, yield_checks
from vitzoo.testing.variants import Variant


def check_id(variant: Variant, check: Any) -> str:
    """``attention:mhsa-check_batch_independence`` (so ``-k`` selects a variant or a check)."""
    return f"{variant.id}-{check.__name__}"


def parametrize_with_checks(
    variants: Iterable[Variant],
    *,
    expected_failed_checks: Mapping[str, Mapping[str, str]] | None = None,
    include_slow: bool = True,
) -> Any:
    """``pytest.mark.parametrize("variant, check", ...)`` over every check of every variant.

    Use it as::

        @parametrize_with_checks(variants(plugin="example"))
        def test_conformance(variant, check):
            check(variant)

    ``expected_failed_checks`` maps a variant id to ``{check name: reason}``; those become
    ``xfail(strict=True)``, so a fixed bug shows up as a failing stale entry. Entries naming
    an unknown variant or check raise, so typos do not silently disable nothing. Slow checks get
    the ``slow`` marker (deselect with ``-m "not slow"``), or are left out when not
    ``include_slow``.
    """
    import pytest

    known = {k: dict(v) for k, v in (expected_failed_checks or {}).items()}
    params = []
    seen: dict[str, set[str]] = {}
    for variant in variants:
        names = seen.setdefault(variant.id, set())
        for check in yield_checks(variant):
            names.add(check.__name__)
            if is_slow(check) and not include_slow:
                continue
            marks = []
            declared = getattr(variant.entry, "known_failures", None) or {}
            reason = known.get(variant.id, {}).get(check.__name__, declared.get(check.__name__))
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            if is_slow(check):
                marks.append(pytest.mark.slow)
            params.append(pytest.param(variant, check, id=check_id(variant, check), marks=marks))
    stale = [
        f"{vid}: {sorted(set(checks) - seen[vid]) if vid in seen else '(unknown variant)'}"
        for vid, checks in known.items()
        if vid not in seen or set(checks) - seen[vid]
    ]
    if stale:
        raise ValueError(f"expected_failed_checks names unknown variants or checks: {stale}")
    if not params:
        raise ValueError("parametrize_with_checks got no variants (nothing to test)")
    return pytest.mark.parametrize("variant, check", params)
