"""Layering changes over a spec: a ``preset:`` under the file, ``KEY=VALUE`` overrides over both.

Every way of changing a spec without editing it goes through here, once: ``vitzoo.build``'s
keyword overrides, the CLI's ``--set`` flags (:func:`parse_assignments` is their one parser),
and a spec's ``preset:`` base. When a changed field turns out invalid, :func:`blame_overrides`
names the override (the flag the user typed), not a line of the file they did not change.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from vitzoo.config import SpecValueError
from vitzoo.errors import OverrideSyntaxError, SpecError, SpecIssue
from vitzoo.registry import Registry
from vitzoo.spec.yaml_source import load_yaml
from vitzoo.suggest import did_you_mean

#: Root sections an override key may start with; any other bare key means ``model.<key>``.
ROOT_SECTIONS = frozenset({"model", "objective", "preset", "train", "data"})


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base``; a component whose ``type`` changes is replaced whole."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = out.get(key)
        same_type = not (
            isinstance(value, Mapping)
            and isinstance(current, Mapping)
            and "type" in value
            and value.get("type") != current.get("type")
        )
        if isinstance(value, Mapping) and isinstance(current, Mapping) and same_type:
            out[key] = deep_merge(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c = value`` set (creating mappings on the way)."""
    keys = dotted.split(".")
    override: dict[str, Any] = {}
    cursor = override
    for key in keys[:-1]:
        cursor = cursor.setdefault(key, {})
    cursor[keys[-1]] = value
    return deep_merge(data, override)


def expand_preset(registry: Registry, data: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the spec's ``preset:`` (if any) under its own fields."""
    data = dict(data)
    name = data.get("preset")
    if name is None:
        return data
    if not isinstance(name, str) or ("preset", name) not in registry:
        raise SpecValueError(("preset",), unknown_preset_message(registry, name))
    base = dict(registry.get("preset", name).spec)
    return deep_merge(base, data)


#: Endings of weights files and folders people write where a preset name goes.
WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".onnx", ".pt2")


def unknown_preset_message(registry: Registry, name: Any) -> str:
    """What to do about ``preset: NAME`` naming no preset: the closest name and where the list
    is (never the whole list: 116 names buried the suggestion), or -- for a weights file -- how
    to start from weights instead."""
    text = str(name)
    if text.startswith("hf-hub:") or text.endswith(WEIGHTS_SUFFIXES) or "/" in text:
        return (
            f"{text!r} is not a preset but weights; to start from them write `train.init_from: "
            f"{text}` (fine-tuning: the model section is taken from the weights) or `weights: "
            f"{{source: {text}}}`"
        )
    names = [*registry.names("preset"), *registry.aliases()]
    return (
        f"unknown preset {text!r}{did_you_mean(text, names)}; "
        "`vitzoo list --kind preset` lists the presets"
    )


def override_path(key: str) -> str:
    """``num_classes`` means ``model.num_classes``; dotted keys are taken as full spec paths."""
    key = key.replace("__", ".")
    if "." in key or key in ROOT_SECTIONS:
        return key
    return f"model.{key}"


def apply_overrides(data: Any, overrides: Mapping[str, Any] | None) -> Any:
    """``data`` with every ``key: value`` of ``overrides`` set at its :func:`override_path`.

    A ``data`` that is not a mapping is returned as it is: validation reports that problem.
    """
    for key, value in (overrides or {}).items():
        if not isinstance(data, dict):
            break
        data = set_path(data, override_path(key), value)
    return data


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["model.dim=384", "train.lr=0.001"]`` -> ``{"model.dim": 384, "train.lr": 0.001}``.

    Values are YAML scalars or flow collections (``[8, 16]``, ``{type: mlp}``), read as a spec
    file's values are (:func:`~vitzoo.spec.yaml_source.load_yaml`: ``3e-4`` is a number); an
    empty value means null. Raises :class:`OverrideSyntaxError` for an item the user has to rewrite.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise OverrideSyntaxError(f"expected key=value, got {item!r}")
        try:
            overrides[key.strip()] = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise OverrideSyntaxError(f"cannot read the value of {item!r}: {problem}") from None
    return overrides


def assignment_sources(items: Iterable[str], flag: str = "--set") -> dict[str, str]:
    """``{key: "--set key=value"}`` for each assignment, as the user typed it (for errors)."""
    return {item.partition("=")[0].strip(): f"{flag} {item}" for item in items}


def blame_overrides(
    exc: SpecError, overrides: Mapping[str, Any], sources: Mapping[str, str]
) -> SpecError:
    """Issues at an overridden path name the override (a CLI flag), not a line of the file."""
    if not overrides:
        return exc
    labels = {
        override_path(key): sources.get(key) or f"override {override_path(key)}={value!r}"
        for key, value in overrides.items()
    }
    # the most specific override wins: `--set model.dim=7` over a whole `model` given at once
    by_depth = sorted(labels.items(), key=lambda item: -item[0].count("."))
    issues = []
    for issue in exc.issues:
        label = next(
            (
                lab
                for path, lab in by_depth
                if issue.path == path or issue.path.startswith(path + ".")
            ),
            None,
        )
        if label is not None:
            issue = SpecIssue(issue.path, issue.message, label)
        issues.append(issue)
    return SpecError(issues)
