"""A weight converter (data: rules plus how to read the source's config), the one engine that
applies any converter's rules with strict accounting of every tensor on both sides, and the
strict load of its result into a model.

The engine knows no family: plugins register :class:`WeightConverter` objects through the
``register_weight_converters`` hook, next to the architecture they convert into.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitzoo.errors import WeightsError
from vitzoo.formats import SOURCE_KINDS, SourceKind
from vitzoo.weights.rules import (
    AnyRule,
    Concat,
    KeepInit,
    Rename,
    Shape,
    Split,
    Sum,
    Unused,
    apply_ops,
    expand_target,
)

#: detect(tensors, config) -> True when this converter recognises the checkpoint.
Detector = Callable[[Mapping[str, torch.Tensor], Mapping[str, Any]], bool]
#: spec_from_config(config) -> a vitzoo spec mapping ({"model": {...}}) for that checkpoint.
SpecFromConfig = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class WeightConverter:
    """Everything vitzoo needs to load one family's foreign checkpoints.

    ``architectures`` are the vitzoo ``model.type`` values it fills. ``config_names`` are what
    the source's ``config.json`` calls this model (HF ``model_type``, timm ``architecture``
    prefix) so a Hugging Face / timm hub folder finds its converter without a preset.
    ``detect`` defaults to "every source key is claimed by some rule".
    ``equivalents`` lists (vitzoo preset, source model name) pairs for the README table and
    ``verified_by`` names the test proving outputs identical (empty: not proven).
    """

    name: str
    source: SourceKind
    architectures: tuple[str, ...]
    rules: tuple[AnyRule, ...]
    detect: Detector | None = None
    spec_from_config: SpecFromConfig | None = None
    config_names: tuple[str, ...] = ()
    summary: str = ""
    equivalents: tuple[tuple[str, str], ...] = ()
    verified_by: str = ""
    # Filled by the plugin loader with the registering plugin's name.
    plugin: str = "?"
    kind: str = "converter"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "architectures", tuple(self.architectures))
        if self.source not in SOURCE_KINDS:
            raise ValueError(f"converter {self.name!r}: source must be one of {SOURCE_KINDS}")
        for rule in self.rules:
            re.compile(rule.pattern)

    def recognises(self, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> bool:
        if self.detect is not None:
            return bool(self.detect(tensors, config))
        patterns = [re.compile(r.pattern) for r in self.rules if not isinstance(r, KeepInit)]
        return bool(tensors) and all(any(p.fullmatch(k) for p in patterns) for k in tensors)

    def convert(
        self, tensors: Mapping[str, torch.Tensor], target_shapes: Mapping[str, Shape]
    ) -> Conversion:
        return apply_rules(self.rules, tensors, target_shapes)


@dataclass
class Conversion:
    """The result of applying rules: vitzoo tensors plus an account of everything left over."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    #: vitzoo key -> the source key(s) it came from (for error messages).
    origin: dict[str, str] = field(default_factory=dict)
    unmatched_source: list[str] = field(default_factory=list)
    #: source key -> vitzoo key a rule produced that the model does not have.
    unknown_target: dict[str, str] = field(default_factory=dict)
    missing_target: list[str] = field(default_factory=list)
    duplicate_target: dict[str, list[str]] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    kept_init: dict[str, str] = field(default_factory=dict)

    def refit(self, target_shapes: Mapping[str, Shape]) -> None:
        """Recompute the vitzoo-side account against another model's tensors (after adapting)."""
        for key in [k for k in self.tensors if k not in target_shapes]:
            self.unknown_target[self.origin.pop(key, key)] = key
            del self.tensors[key]
        self.missing_target = [
            k for k in target_shapes if k not in self.tensors and k not in self.kept_init
        ]

    def shape_mismatches(self, target_shapes: Mapping[str, Shape]) -> list[str]:
        return [
            f"{key} (from {self.origin.get(key, '?')}): checkpoint {tuple(t.shape)}, "
            f"model {tuple(target_shapes[key])}"
            for key, t in sorted(self.tensors.items())
            if key in target_shapes and tuple(t.shape) != tuple(target_shapes[key])
        ]

    def problems(self, target_shapes: Mapping[str, Shape]) -> list[str]:
        """Every accounting failure, one readable line each (empty when the load is exact)."""
        lines: list[str] = []

        def listed(label: str, keys: Sequence[str]) -> None:
            if keys:
                shown = ", ".join(keys[:12]) + (
                    f", ... ({len(keys)} in all)" if len(keys) > 12 else ""
                )
                lines.append(f"{label}: {shown}")

        listed("checkpoint tensors no rule uses", sorted(self.unmatched_source))
        listed(
            "checkpoint tensors mapped to names the model lacks",
            [f"{s} -> {t}" for s, t in sorted(self.unknown_target.items())],
        )
        listed("model tensors nothing fills", sorted(self.missing_target))
        listed(
            "model tensors filled twice",
            [f"{t} <- {' + '.join(s)}" for t, s in sorted(self.duplicate_target.items())],
        )
        listed("shape mismatches", self.shape_mismatches(target_shapes))
        return lines


def apply_rules(
    rules: Sequence[AnyRule],
    tensors: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, Shape],
) -> Conversion:
    """Map ``tensors`` through ``rules`` (first matching rule per key, in rule order)."""
    out = Conversion()
    consumed: set[str] = set()
    mapping_rules = [r for r in rules if not isinstance(r, KeepInit)]
    compiled = [(rule, re.compile(rule.pattern)) for rule in mapping_rules]

    def emit(target: str, tensor: torch.Tensor, source: str) -> None:
        if target not in target_shapes:
            out.unknown_target[source] = target
            return
        if target in out.tensors:
            out.duplicate_target.setdefault(target, [out.origin[target]]).append(source)
            return
        out.tensors[target] = tensor
        out.origin[target] = source

    for key in tensors:
        if key in consumed:
            continue
        for rule, pattern in compiled:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            if isinstance(rule, Unused):
                out.unused[key] = rule.reason
                consumed.add(key)
            elif isinstance(rule, Rename):
                target = expand_target(rule.target, match, target_shapes)
                shape = tuple(target_shapes.get(target, tensors[key].shape))
                emit(target, apply_ops(rule.ops, tensors[key], shape), key)
                consumed.add(key)
            elif isinstance(rule, Concat):
                names = [key, *(match.expand(s) for s in rule.sources[1:])]
                if any(n not in tensors or n in consumed for n in names):
                    continue  # an incomplete group: let a later rule (or the report) have it
                target = match.expand(rule.target)
                joined = torch.cat([tensors[n] for n in names], dim=rule.dim)
                shape = tuple(target_shapes.get(target, joined.shape))
                emit(target, apply_ops(rule.ops, joined, shape), " + ".join(names))
                consumed.update(names)
            elif isinstance(rule, Sum):
                names = [key, *(match.expand(s) for s in rule.sources[1:])]
                own = [n for i, n in enumerate(names) if i not in rule.shared]
                if any(n not in tensors for n in names) or any(n in consumed for n in own):
                    continue  # an incomplete group: let a later rule (or the report) have it
                _emit_sum(rule, match, names, tensors, target_shapes, emit, out)
                consumed.update(own)
            elif isinstance(rule, Split):
                targets = [match.expand(t) for t in rule.targets]
                whole = apply_ops(rule.ops, tensors[key], tuple(tensors[key].shape))
                sizes = rule.sizes or tuple(
                    target_shapes[t][rule.dim] if t in target_shapes else 0 for t in targets
                )
                if sum(sizes) != whole.shape[rule.dim] or 0 in sizes:
                    out.unknown_target[key] = " + ".join(targets) + " (split sizes do not fit)"
                else:
                    for target, part in zip(
                        targets, torch.split(whole, list(sizes), dim=rule.dim), strict=True
                    ):
                        emit(target, part, key)
                consumed.add(key)
            break
    # After the loop: a key an earlier rule skipped may have joined a later group (key before
    # query in sorted order).
    out.unmatched_source = [k for k in tensors if k not in consumed]

    keep = [(r, re.compile(r.pattern)) for r in rules if isinstance(r, KeepInit)]
    for target in target_shapes:
        if target in out.tensors:
            continue
        reason = next((r.reason for r, p in keep if p.fullmatch(target)), None)
        if reason is not None:
            out.kept_init[target] = reason
        else:
            out.missing_target.append(target)
    return out


def _emit_sum(
    rule: Sum,
    match: re.Match[str],
    names: list[str],
    tensors: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, Shape],
    emit: Callable[[str, torch.Tensor, str], None],
    out: Conversion,
) -> None:
    """Add ``names``' tensors (each through its ops) into the rule's target."""
    target = match.expand(rule.target)
    shape = tuple(target_shapes.get(target, tensors[names[0]].shape))
    ops = rule.source_ops or tuple(() for _ in names)
    parts = [apply_ops(o, tensors[n], shape) for o, n in zip(ops, names, strict=True)]
    if any(p.shape != parts[0].shape for p in parts):
        shapes = " + ".join(str(tuple(p.shape)) for p in parts)
        out.unknown_target[names[0]] = f"{target} (summed shapes differ: {shapes})"
        return
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    emit(target, total, " + ".join(names))


def target_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def raise_for_problems(
    conversion: Conversion, shapes: Mapping[str, Any], where: str, hint: str = ""
) -> None:
    """One :class:`~vitzoo.errors.WeightsError` listing every accounting problem (``hint``,
    e.g. which family the checkpoint looks like, is added at the end)."""
    problems = conversion.problems(shapes)
    if problems:
        raise WeightsError(
            f"{where}: weights do not match the model; " + "; ".join(problems) + hint
        )


def load_converted(
    model: nn.Module,
    conversion: Conversion,
    *,
    strict: bool = True,
    where: str = "checkpoint",
    hint: str = "",
) -> Conversion:
    """Load already-converted tensors, strictly (every tensor, both sides) unless told not to."""
    shapes = target_shapes(model)
    if strict:
        raise_for_problems(conversion, shapes, where, hint)
    fitting = {
        k: v
        for k, v in conversion.tensors.items()
        if k in shapes and tuple(v.shape) == tuple(shapes[k])
    }
    own = model.state_dict()
    with torch.no_grad():
        for key, tensor in fitting.items():
            own[key].copy_(tensor.to(dtype=own[key].dtype))
    return conversion
