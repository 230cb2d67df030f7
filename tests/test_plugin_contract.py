"""The plugin contract beyond loading: the declared tag vocabulary, conformance hosts chosen by
capability (the core depends on no one plugin), and the deprecated ``vitzoo.inspect`` alias."""

from __future__ import annotations

import types
import warnings
from typing import Literal

import pytest

import vitzoo
from vitzoo.components.attention import MhsaConfig, build_mhsa
from vitzoo.plugins import load_plugins
from vitzoo.registry import RegistrationError
from vitzoo.tags import KNOWN_TAGS, TAGS


def attention_plugin(tags: object) -> types.SimpleNamespace:
    class TaggedConfig(MhsaConfig):
        type: Literal["tagged"] = "tagged"

    @vitzoo.hookimpl
    def register_attention(register) -> None:
        register("tagged", build_mhsa, TaggedConfig, tags=tags)

    return types.SimpleNamespace(register_attention=register_attention)


def test_every_tag_has_a_meaning() -> None:
    assert KNOWN_TAGS == set(TAGS)
    assert all(meaning.strip() for meaning in TAGS.values())


def test_unknown_tag_fails_registration_naming_plugin_tag_and_vocabulary() -> None:
    with pytest.raises(Exception) as info:
        load_plugins(
            entrypoints=False, strict=True, extra=[("typo-plugin", attention_plugin({"msak"}))]
        )
    cause = info.value.__cause__
    assert isinstance(cause, RegistrationError)
    message = str(cause)
    assert "'typo-plugin'" in message and "'msak'" in message
    assert "did you mean 'mask'?" in message
    assert "feature-maps" in message  # the known tags are listed


def test_unknown_tag_rolls_back_only_that_plugin() -> None:
    system = load_plugins(
        entrypoints=False, quiet=True, extra=[("typo-plugin", attention_plugin("featuremaps"))]
    )
    assert system.records["typo-plugin"].status == "failed"
    assert "unknown tag 'featuremaps'" in system.records["typo-plugin"].error
    assert ("attention", "tagged") not in system.registry
    assert ("attention", "mhsa") in system.registry


def test_known_tags_register() -> None:
    system = load_plugins(
        entrypoints=False, strict=True, extra=[("tagged", attention_plugin({"mask", "sdpa"}))]
    )
    assert system.registry.get("attention", "tagged").tags == {"mask", "sdpa"}


def test_preset_tags_are_checked_too() -> None:
    @vitzoo.hookimpl
    def register_presets(register) -> None:
        register("odd-preset", {"model": {"type": "vit"}}, tags={"distilation"})

    system = load_plugins(
        entrypoints=False,
        quiet=True,
        extra=[("odd", types.SimpleNamespace(register_presets=register_presets))],
    )
    assert "did you mean 'distillation'?" in system.records["odd"].error


# -- conformance hosts ----------------------------------------------------------------------
def test_components_find_another_host_without_the_vit_plugin() -> None:
    """``VITZOO_DISABLE_PLUGINS=vit``: every component either gets another registered host
    whose tiny spec validates, or is skipped with a plain reason -- never a failure."""
    from vitzoo.testing.variants import NoHostArchitecture, choose_host, variants

    system = load_plugins(disable=["vit"], strict=True, quiet=True)
    assert ("architecture", "vit") not in system.registry
    hosted = {}
    for variant in variants(system=system):
        if variant.kind in ("architecture", "preset"):
            continue
        try:
            hosted[variant.id] = choose_host(variant)
        except NoHostArchitecture:
            continue
        variant.tiny_spec()  # validates in the chosen host
    assert hosted["pooling:cls"] != "vit" and hosted["attention:mhsa"] != "vit"


def test_pooling_checks_pass_without_the_vit_plugin() -> None:
    from vitzoo.testing import check_variant, variants

    system = load_plugins(disable=["vit"], strict=True, quiet=True)
    for variant in variants(kind="pooling", system=system):
        if variant.plugin != "core":
            continue
        results = check_variant(variant, on_fail="raise")
        assert sum(r.status == "passed" for r in results) > 10, variant.id


def test_without_any_architecture_model_checks_are_skipped_plainly() -> None:
    from vitzoo.testing import check_variant, variants

    system = load_plugins(entrypoints=False, strict=True)
    assert system.registry.names("architecture") == []
    (variant,) = [v for v in variants(kind="pooling", system=system) if v.name == "mean"]
    results = check_variant(variant, on_fail="raise")
    by_status = {r.check: r.status for r in results}
    assert by_status["check_registration_metadata"] == "passed"
    assert by_status["check_validates_from_defaults"] == "passed"
    skipped = [r for r in results if r.check == "check_output_shape"]
    assert skipped[0].status == "skipped"
    assert "no registered architecture can host it" in skipped[0].message


# -- names ----------------------------------------------------------------------------------
def test_vitzoo_inspect_is_a_deprecated_alias_of_inspect_forward() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = vitzoo.inspect
    assert alias is vitzoo.inspect_forward
    assert caught and issubclass(caught[0].category, DeprecationWarning)
    assert "vitzoo.inspect_forward" in str(caught[0].message)
