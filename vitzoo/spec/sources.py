"""Where a spec comes from: a spec object, a mapping, a preset name (or alias) or a YAML file.

Every caller that takes "a spec" in any of these forms -- the builder, the whole-spec rules
for a spec nested in another (a distillation teacher's), weight loading -- reads it here, once,
and gets plain data plus where it came from (so errors can name file and line).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitzoo.errors import SpecError, SpecIssue
from vitzoo.registry import Registry
from vitzoo.spec.model import SpecBase
from vitzoo.spec.overrides import apply_overrides, blame_overrides
from vitzoo.spec.validate import validate_spec
from vitzoo.spec.yaml_source import is_spec_file_name, read_spec_file, spec_to_dict
from vitzoo.suggest import did_you_mean

#: What callers may pass as a spec.
SpecSource = SpecBase | Mapping[str, Any] | str | Path


@dataclass(frozen=True)
class SpecData:
    """A spec as plain data, with the file (and its text) it was read from, if any."""

    data: Any
    file: str = "<spec>"
    text: str | None = None


def read_spec_source(source: SpecSource, registry: Registry) -> SpecData:
    """``source`` as plain data: a file is read, a preset name becomes ``{preset: name}``."""
    if isinstance(source, SpecBase):
        return SpecData(spec_to_dict(source))
    if isinstance(source, Mapping):
        return SpecData(dict(source))
    path = Path(source)
    if path.is_file() or isinstance(source, Path) or is_spec_file_name(path):
        text, data = read_spec_file(path)
        return SpecData(data, str(path), text)
    if ("preset", str(source)) in registry:
        return SpecData({"preset": str(source)})
    hint = did_you_mean(str(source), [*registry.names("preset"), *registry.aliases()])
    raise SpecError(
        [
            SpecIssue(
                "",
                f"{source!r} is neither a spec file nor a registered preset{hint}; "
                "`vitzoo list --kind preset` lists the presets",
            )
        ]
    )


def validate_source(
    source: SpecSource,
    registry: Registry,
    overrides: Mapping[str, Any] | None = None,
    *,
    failed_plugins: list[str] | None = None,
    sources: Mapping[str, str] | None = None,
) -> tuple[SpecBase, SpecData]:
    """Read ``source``, apply ``overrides`` and validate the fields (no whole-spec rules, no
    build: :func:`vitzoo.builder.resolve` adds those). A problem in an overridden field is
    blamed on the override (``sources`` names where each came from, e.g. a ``--set`` flag)."""
    read = read_spec_source(source, registry)
    data = apply_overrides(read.data, overrides)
    try:
        spec = validate_spec(
            registry, data, file=read.file, text=read.text, failed_plugins=failed_plugins
        )
    except SpecError as exc:
        raise blame_overrides(exc, overrides or {}, sources or {}) from None
    return spec, SpecData(data, read.file, read.text)


def given_model_fields(
    source: SpecSource, registry: Registry, overrides: Mapping[str, Any] | None = None
) -> frozenset[str] | None:
    """The top-level ``model`` fields the caller wrote -- in a spec file or mapping (not counting
    its ``preset:`` base) or as overrides -- or ``None`` for a spec object, all of whose fields
    are the caller's. Loading weights asks it: a class count nobody set follows the weights."""
    if isinstance(source, SpecBase):
        return None
    data = apply_overrides(read_spec_source(source, registry).data, overrides)
    model = data.get("model") if isinstance(data, Mapping) else None
    return frozenset(model) if isinstance(model, Mapping) else frozenset()
