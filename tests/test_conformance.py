"""Every registered variant (all installed plugins) through the shared conformance suite.

Discovery is automatic, so a new variant cannot be forgotten. The torch.compile checks are slow
on CPU; they run only with ``VITZOO_SLOW_CHECKS=1`` (then select them with ``-m slow``).
"""

from __future__ import annotations

import os

from vitzoo.testing import parametrize_with_checks, variants

#: Known failures, by variant id then check name, each with the reason. A check listed here that
#: starts passing fails the run (strict xfail), so this list cannot go stale. Built-in variants
#: declare theirs at registration (``known_failures=``), so ``vitzoo check`` agrees with pytest.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}

INCLUDE_SLOW = os.environ.get("VITZOO_SLOW_CHECKS", "").strip().lower() in {"1", "true", "yes"}


@parametrize_with_checks(
    variants(), expected_failed_checks=EXPECTED_FAILED_CHECKS, include_slow=INCLUDE_SLOW
)
def test_conformance(variant, check):
    check(variant)
