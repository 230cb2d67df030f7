"""Specs: YAML on disk, pydantic in memory, validated against whatever is registered.

One module per job:

* :mod:`~vitzoo.spec.unions` binds every ``ComponentSpec(kind)`` field to the discriminated
  union of that kind's registered configs (rebuilt when the registry changes);
* :mod:`~vitzoo.spec.model` builds the root :class:`SpecBase` class of a registry and its
  JSON Schema; :mod:`~vitzoo.spec.sections` holds its fixed ``train:`` / ``data:`` sections;
* :mod:`~vitzoo.spec.overrides` layers a ``preset:`` and ``KEY=VALUE`` overrides over a spec;
* :mod:`~vitzoo.spec.yaml_source` reads, parses and writes spec text;
* :mod:`~vitzoo.spec.errors` turns pydantic errors into ``file:line:col  path: message`` lines
  (:mod:`vitzoo.errors` holds the :class:`SpecError` they are raised as);
* :mod:`~vitzoo.spec.validate` ties them together: ``validate_spec``, ``load_spec_file``.

The spec layer imports nothing from :mod:`vitzoo.training`: the trainer reads specs, it does
not define them.
"""

from __future__ import annotations

from typing import Literal

from vitzoo.errors import SpecError, SpecIssue
from vitzoo.spec.errors import allowed_fields, allowed_types, spec_error_from
from vitzoo.spec.model import SpecBase, spec_json_schema, spec_model
from vitzoo.spec.overrides import (
    OverrideSyntaxError,
    apply_overrides,
    assignment_sources,
    blame_overrides,
    deep_merge,
    expand_preset,
    override_path,
    parse_assignments,
    set_path,
)
from vitzoo.spec.sections import DataConfig, TrainConfig
from vitzoo.spec.unions import resolved_config
from vitzoo.spec.validate import load_spec_file, load_spec_text, validate_spec
from vitzoo.spec.yaml_source import (
    SPEC_FILE_SUFFIXES,
    is_spec_file_name,
    load_yaml,
    parse_yaml,
    read_spec_file,
    spec_to_dict,
    spec_to_yaml,
)

# The conformance suite's contract checks import these under their former private names.
_allowed_fields = allowed_fields
_allowed_types = allowed_types

__all__ = [
    "SPEC_FILE_SUFFIXES",
    "DataConfig",
    "Literal",
    "OverrideSyntaxError",
    "SpecBase",
    "SpecError",
    "SpecIssue",
    "TrainConfig",
    "allowed_fields",
    "allowed_types",
    "apply_overrides",
    "assignment_sources",
    "blame_overrides",
    "deep_merge",
    "expand_preset",
    "is_spec_file_name",
    "load_spec_file",
    "load_spec_text",
    "load_yaml",
    "override_path",
    "parse_assignments",
    "parse_yaml",
    "read_spec_file",
    "resolved_config",
    "set_path",
    "spec_error_from",
    "spec_json_schema",
    "spec_model",
    "spec_to_dict",
    "spec_to_yaml",
    "validate_spec",
]
