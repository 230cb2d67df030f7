"""Plugin loading: isolation of failures, rollback, duplicates, selection by environment."""

from __future__ import annotations

import pytest

from vitzoo.plugins import PluginLoadError, load_plugins


def fake_only(*names: str) -> list[str]:
    return [f"fake-{n}" for n in names]


def test_good_plugin_registers_with_provenance(fake_plugins) -> None:
    system = load_plugins(only=fake_only("good"), quiet=True)
    entry = system.registry.get("attention", "fake-attention")
    assert entry.plugin == "fake-good"
    assert system.records["fake-good"].status == "ok"
    assert system.records["fake-good"].counts == {"attention": 1}
    assert system.records["fake-good"].distribution == "vitzoo-fakegood"


def test_broken_plugins_are_isolated_recorded_and_reported(fake_plugins, capsys) -> None:
    system = load_plugins(only=fake_only("good", "brokenimport", "badsig", "duplicate", "raises"))
    stderr = capsys.readouterr().err.strip().splitlines()
    failed = {r.name: r.error for r in system.failed}
    assert set(failed) == set(fake_only("brokenimport", "badsig", "duplicate", "raises"))
    assert "ModuleNotFoundError" in failed["fake-brokenimport"]
    assert "unexpected_argument" in failed["fake-badsig"]
    # a duplicate names both plugins
    assert "'core'" in failed["fake-duplicate"] and "'fake-duplicate'" in failed["fake-duplicate"]
    # one line per failure on stderr
    assert len(stderr) == 4 and all(line.startswith("vitzoo: skipped plugin") for line in stderr)
    # the good plugin and the core still work; the half-registered pooling was rolled back
    assert ("attention", "fake-attention") in system.registry
    assert ("attention", "mhsa") in system.registry
    assert ("pooling", "half-registered") not in system.registry
    assert not system.pm.has_plugin("fake-raises")


def test_strict_mode_reraises(fake_plugins) -> None:
    with pytest.raises(PluginLoadError, match="fake-brokenimport"):
        load_plugins(only=fake_only("brokenimport"), strict=True)


def test_environment_selects_and_disables(fake_plugins, monkeypatch) -> None:
    monkeypatch.setenv("VITZOO_LOAD_PLUGINS", "fake-good,vit")
    system = load_plugins()
    assert ("attention", "fake-attention") in system.registry
    assert ("architecture", "vit") in system.registry
    assert "fake-raises" not in system.records

    monkeypatch.setenv("VITZOO_LOAD_PLUGINS", "")
    assert load_plugins().registry.names("architecture") == []  # only the core components

    monkeypatch.delenv("VITZOO_LOAD_PLUGINS")
    monkeypatch.setenv(
        "VITZOO_DISABLE_PLUGINS",
        "fake-good,fake-brokenimport,fake-badsig,fake-duplicate,fake-raises",
    )
    system = load_plugins(quiet=True)
    assert ("attention", "fake-attention") not in system.registry
    assert system.records["fake-good"].status == "disabled"
    assert not system.failed


def test_strict_env_var(fake_plugins, monkeypatch) -> None:
    monkeypatch.setenv("VITZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError):
        load_plugins(only=fake_only("raises"))


def test_no_side_effects_at_import() -> None:
    import subprocess
    import sys

    code = "import vitzoo, vitzoo.plugins, sys; assert vitzoo.plugins._default is None; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_builtin_plugin_works_alone() -> None:
    """Built-in plugins must not depend on each other (disabling one must not break another).

    For each ``vitzoo_plugins.*`` entry point: (1) it loads alone in strict mode; (2) its source
    imports no sibling plugin module (private ``vitzoo_plugins._*`` helpers are fine): shared
    code belongs in ``vitzoo.components``; (3) every default and example it registers validates
    without the other plugins -- loading alone does not prove that, because a config default such
    as ``class_block: {type: class-attention}`` is only resolved at spec time. Step (3) loads the
    ``vit`` plugin beside it: it registers the host model that component examples (and the
    ``memory-vit`` adapter's ``base``) slot into, by the conformance suite's convention.
    """
    import ast
    import importlib.util
    from importlib.metadata import entry_points

    from vitzoo.builder import resolve_spec
    from vitzoo.plugins import ENTRY_POINT_GROUP
    from vitzoo.testing.variants import DEFAULT_HOST, variants

    builtin = {
        ep.name: ep.value
        for ep in entry_points(group=ENTRY_POINT_GROUP)
        if ep.value.startswith("vitzoo_plugins.")
    }
    assert DEFAULT_HOST in builtin and "cait" in builtin and "xcit" in builtin
    modules = set(builtin.values())
    for name, module in sorted(builtin.items()):
        system = load_plugins(only=[name], strict=True, quiet=True)
        assert system.records[name].status == "ok", name

        origin = importlib.util.find_spec(module).origin
        with open(origin, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=origin)
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                # ``from vitzoo_plugins import cait`` imports the module ``vitzoo_plugins.cait``
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        siblings = {m for m in imported if m in modules - {module}}
        assert not siblings, f"{module} imports sibling plugin(s) {sorted(siblings)}"

        system = load_plugins(only=sorted({name, DEFAULT_HOST}), strict=True, quiet=True)
        for variant in variants(plugin=name, system=system):
            if variant.kind != "preset":  # presets: resolved below
                variant.tiny_spec()  # raises SpecError naming the unknown type
        for preset in system.registry.entries("preset"):
            if preset.plugin == name:
                resolve_spec(preset.name, system=system)
