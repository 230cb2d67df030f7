"""Spec -> nn.Module: resolve a spec once, build it, rebuild it for another input size.

Resolving is three steps, each owned by its layer: the spec layer validates the fields
(:mod:`vitzoo.spec`), the whole-spec rules check that the parts fit together
(:mod:`vitzoo.rules`), and the trial build on the meta device checks that the result builds,
runs and fits the machine (:mod:`vitzoo.trial`). :func:`resolve` runs them once and returns what
the trial learned (parameters, output shape, MACs when asked) with the spec, so callers do not
build again to find out. :func:`build_from_spec` is the only place a spec becomes a module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vitzoo.components.context import BuildContext
from vitzoo.components.model import install_rebuilder, reference_tensor
from vitzoo.components.resample import adapt_state_dict
from vitzoo.errors import SpecError
from vitzoo.plugins import OWN_DISTRIBUTION, PluginSystem, get_plugin_system
from vitzoo.rules import check_rules
from vitzoo.spec import SpecBase
from vitzoo.spec.sources import SpecSource, validate_source
from vitzoo.spec.validate import blame_preset
from vitzoo.spec.yaml_source import key_positions
from vitzoo.trial import TrialReport, check_trial

__all__ = [
    "Resolved",
    "SpecSource",
    "build_from_spec",
    "current_spec",
    "rebuild_for_input_size",
    "resolve",
    "resolve_spec",
]


@dataclass(frozen=True)
class Resolved:
    """A spec that validated, passed the whole-spec rules and the trial build, and what the
    trial measured (``None`` where no trial ran: a registered preset used as is, a spec
    object passed without changes, or ``VITZOO_TRIAL_BUILD=0``)."""

    spec: SpecBase
    report: TrialReport | None = None


def _is_plain_preset(data: Any, overrides: Mapping[str, Any] | None, system: PluginSystem) -> bool:
    """One of vitzoo's own presets as it is (its tests build and run every one), with at most
    ``train.`` overrides. Anything beside it -- an objective, a data section, a model override --
    may break a whole-spec rule or the budget, and a third party's preset is not vitzoo's to
    vouch for: those go through the rules and the trial."""
    if not (isinstance(data, Mapping) and set(data) == {"preset"}):
        return False
    if any(not str(key).startswith("train.") for key in overrides or {}):
        return False
    name = data["preset"]
    if not isinstance(name, str) or ("preset", name) not in system.registry:
        return False
    record = system.records.get(system.registry.get("preset", name).plugin)
    return record is not None and record.distribution == OWN_DISTRIBUTION


def resolve(
    source: SpecSource,
    overrides: Mapping[str, Any] | None = None,
    *,
    system: PluginSystem | None = None,
    sources: Mapping[str, str] | None = None,
    macs: bool = False,
) -> Resolved:
    """Turn a spec object, mapping, preset name or YAML path (+ overrides) into a resolved spec.

    A problem in an overridden field is blamed on the override, not on the file: ``sources``
    names where each override came from (``{"train.lr": "--set train.lr=-1"}``). ``macs=True``
    asks the trial build to count multiply-accumulates too (it then runs for plain presets as
    well, which are otherwise trusted: the preset tests build and run every one).
    """
    system = system or get_plugin_system()
    if isinstance(source, SpecBase) and not overrides and not macs:
        return Resolved(source)
    failed = [r.name for r in system.failed]
    spec, read = validate_source(
        source, system.registry, overrides, failed_plugins=failed, sources=sources
    )
    positions = key_positions(read.text)
    if _is_plain_preset(read.data, overrides, system) and not macs:
        return Resolved(spec)
    try:
        check_rules(system.registry, spec, file=read.file, positions=positions)
        report = check_trial(system, spec, file=read.file, positions=positions, macs=macs)
    except SpecError as exc:  # a part the preset brought is the preset's problem
        raise SpecError(blame_preset(exc.issues, read.data, system.registry)) from None
    return Resolved(spec, report)


def resolve_spec(
    source: SpecSource,
    overrides: Mapping[str, Any] | None = None,
    *,
    system: PluginSystem | None = None,
    sources: Mapping[str, str] | None = None,
) -> SpecBase:
    """:func:`resolve`, for callers that want only the spec (``vitzoo.resolve_spec``)."""
    return resolve(source, overrides, system=system, sources=sources).spec


def build_from_spec(spec: SpecBase, *, system: PluginSystem | None = None) -> nn.Module:
    """Build the model a resolved spec describes; the spec is kept on ``model.vitzoo_spec``."""
    system = system or get_plugin_system()
    entry = system.registry.get("architecture", spec.model.type)
    model = entry.factory(spec.model, BuildContext(registry=system.registry))
    model.vitzoo_spec = spec
    return model


def current_spec(model: nn.Module) -> SpecBase:
    """The model's spec, updated for changes made after building (e.g. ``reset_classifier``)."""
    spec = getattr(model, "vitzoo_spec", None)
    if spec is None:
        raise ValueError("this model was not built by vitzoo (it has no vitzoo_spec)")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and getattr(spec.model, "num_classes", num_classes) != num_classes:
        spec = spec.model_copy(
            update={"model": spec.model.model_copy(update={"num_classes": num_classes})}
        )
    return spec


def rebuild_for_input_size(
    model: nn.Module,
    img_size: Any,
    system: Any = None,
    spec_overrides: dict[str, Any] | None = None,
) -> None:
    """``VitzooModel.set_input_size`` (see there): resolve the spec at the new size, build it,
    and load the old weights with grid-shaped tables resampled
    (:func:`~vitzoo.components.resample.adapt_state_dict`); device, dtype, mode, grad
    checkpointing and pruning are kept."""
    size = [int(img_size)] * 2 if isinstance(img_size, int) else [int(s) for s in img_size]
    spec = current_spec(model)
    parent = f"model.{model.image_size_field}".rpartition(".")[0]
    changes = {f"{parent}.{key}": value for key, value in (spec_overrides or {}).items()}
    changes[f"model.{model.image_size_field}"] = size
    new_spec = resolve_spec(spec, changes, system=system)
    reference = reference_tensor(model)
    with torch.random.fork_rng(devices=[]):
        fresh = build_from_spec(new_spec, system=system)
    if reference is not None:
        fresh = fresh.to(device=reference.device, dtype=reference.dtype)
    pruned = model.__dict__.get("_pruned")
    if pruned is not None:
        fresh.prune_intermediate_layers(*pruned)
    fresh.load_state_dict(adapt_state_dict(model, fresh), strict=True)
    fresh.train(model.training)
    fresh.grad_checkpointing = model.grad_checkpointing
    model.__dict__.update(fresh.__dict__)


install_rebuilder(rebuild_for_input_size)
