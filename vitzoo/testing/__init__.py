"""The conformance suite: prove every registered variant behaves (``vitzoo check``, pytest).

Public API. ``import vitzoo.testing`` -- which the pytest plugin triggers in every pytest run --
loads neither torch nor any plugin: discovery (torch-free) is imported here because its module
shares the name of the ``variants`` function; the checks load on first use::

    from vitzoo.testing import variants, parametrize_with_checks

    @parametrize_with_checks(variants(plugin="my-plugin"))
    def test_conformance(variant, check):
        check(variant)

* :func:`variants` -- discover :class:`Variant` objects (``plugin=`` / ``kind=`` filters);
* :func:`check_variant` -- run every check on one variant (scikit-learn's ``check_estimator``);
* :func:`run_checks` -- every check on every variant, collected as :class:`CheckResult` rows;
* :func:`parametrize_with_checks` -- the same as pytest parameters with ``xfail``/``slow`` marks;
* :func:`yield_checks`, :func:`register_check_generator` -- choose / add checks per kind.
"""

from __future__ import annotations

import sys

from vitzoo.lazy import lazy_attributes

if "pytest" in sys.modules:  # readable assert failures inside checks when run under pytest
    sys.modules["pytest"].register_assert_rewrite(
        "vitzoo.testing.checks", "vitzoo.testing.model_checks", "vitzoo.testing.feature_checks"
    )

from vitzoo.testing.variants import (
    TINY_MODEL_KINDS,
    VARIANT_KINDS,
    Variant,
    VariantError,
    variants,
)

_LAZY = {
    "Check": "vitzoo.testing.checks",
    "yield_checks": "vitzoo.testing.checks",
    "register_check_generator": "vitzoo.testing.checks",
    "slow": "vitzoo.testing.checks",
    "is_slow": "vitzoo.testing.checks",
    "CheckResult": "vitzoo.testing.runner",
    "check_variant": "vitzoo.testing.runner",
    "run_checks": "vitzoo.testing.runner",
    "parametrize_with_checks": "vitzoo.testing.parametrize",
}

__all__ = [
    "TINY_MODEL_KINDS",
    "VARIANT_KINDS",
    "Variant",
    "VariantError",
    "variants",
    *sorted(_LAZY),
]


__getattr__ = lazy_attributes(__name__, _LAZY)
