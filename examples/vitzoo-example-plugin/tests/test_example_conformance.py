"""Every variant this plugin registers, through every vitzoo conformance check."""

from vitzoo.testing import parametrize_with_checks, variants


@parametrize_with_checks(variants(plugin="example"))
def test_conformance(variant, check):
    check(variant)
