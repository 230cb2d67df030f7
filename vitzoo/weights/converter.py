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
    OtherTower,
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
    ``verified_by`` names the test proving outputs identical (empty: not proven); which presets'
    released weights it loads is not the converter's to say: each preset's ``released`` names
    (the catalogue) and the converters registered for its architecture give the README table.
    ``assumes`` (one sentence) says which release the converter takes a checkpoint for where
    another release has the same keys and shapes but computes a different function (keys cannot
    tell them apart); every load through the converter reports it.
    """

    name: str
    source: SourceKind
    architectures: tuple[str, ...]
    rules: tuple[AnyRule, ...]
    detect: Detector | None = None
    spec_from_config: SpecFromConfig | None = None
    config_names: tuple[str, ...] = ()
    summary: str = ""
    verified_by: str = ""
    assumes: str = ""
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

    def assumption_note(self) -> str:
        """The line every load through this converter reports (empty: it assumes nothing)."""
        if not self.assumes:
            return ""
        return f"note: converter {self.name!r} takes this checkpoint for {self.assumes}"


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
    #: Source keys of another modality's tower (:class:`~vitzoo.weights.rules.OtherTower`),
    #: also in ``unused``: the source is a multimodal checkpoint.
    other_tower: list[str] = field(default_factory=list)

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
    run = _RuleRun(tensors, target_shapes)
    compiled = [
        (rule, re.compile(rule.pattern)) for rule in rules if not isinstance(rule, KeepInit)
    ]
    for key in tensors:
        if key in run.consumed:
            continue
        for rule, pattern in compiled:
            match = pattern.fullmatch(key)
            if match is not None and run.apply(rule, key, match):
                break
    out = run.out
    # After the loop: a key an earlier rule skipped may have joined a later group (key before
    # query in sorted order).
    out.unmatched_source = [k for k in tensors if k not in run.consumed]

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


class _RuleRun:
    """One :func:`apply_rules` pass: what each rule kind does with a source key it matched.

    Each ``apply`` returns False where the rule lets the key go on to later rules (a group
    that is incomplete, a non-zero tensor for an ``only_if_zero`` rule), True once claimed.
    """

    def __init__(
        self, tensors: Mapping[str, torch.Tensor], target_shapes: Mapping[str, Shape]
    ) -> None:
        self.tensors, self.shapes = tensors, target_shapes
        self.out = Conversion()
        self.consumed: set[str] = set()

    def apply(self, rule: AnyRule, key: str, match: re.Match[str]) -> bool:
        if isinstance(rule, Unused):
            self.leave([key], rule.reason)
            if isinstance(rule, OtherTower):
                self.out.other_tower.append(key)
            return True
        if isinstance(rule, Rename):
            return self.rename(rule, key, match)
        if isinstance(rule, Concat):
            return self.concat(rule, key, match)
        if isinstance(rule, Sum):
            return self.sum(rule, key, match)
        if isinstance(rule, Split):
            return self.split(rule, key, match)
        return True

    def emit(self, target: str, tensor: torch.Tensor, source: str) -> None:
        out = self.out
        if target not in self.shapes:
            out.unknown_target[source] = target
        elif target in out.tensors:
            out.duplicate_target.setdefault(target, [out.origin[target]]).append(source)
        else:
            out.tensors[target] = tensor
            out.origin[target] = source

    def leave(self, keys: Sequence[str], reason: str) -> None:
        for name in keys:
            self.out.unused[name] = reason
        self.consumed.update(keys)

    def rename(self, rule: Rename, key: str, match: re.Match[str]) -> bool:
        target = expand_target(rule.target, match, self.shapes)
        if rule.optional and target not in self.shapes:
            if rule.only_if_zero and not _all_zero(self.tensors[key]):
                return False  # not the same function without it: later rules may claim it
            self.leave([key], rule.optional)
            return True
        shape = tuple(self.shapes.get(target, self.tensors[key].shape))
        self.emit(target, apply_ops(rule.ops, self.tensors[key], shape), key)
        self.consumed.add(key)
        return True

    def concat(self, rule: Concat, key: str, match: re.Match[str]) -> bool:
        names = [key, *(match.expand(s) for s in rule.sources[1:])]
        if any(n not in self.tensors or n in self.consumed for n in names):
            return False  # an incomplete group: let a later rule (or the report) have it
        target = match.expand(rule.target)
        if rule.optional and target not in self.shapes:
            self.leave(names, rule.optional)
            return True
        joined = torch.cat([self.tensors[n] for n in names], dim=rule.dim)
        shape = tuple(self.shapes.get(target, joined.shape))
        self.emit(target, apply_ops(rule.ops, joined, shape), " + ".join(names))
        self.consumed.update(names)
        return True

    def sum(self, rule: Sum, key: str, match: re.Match[str]) -> bool:
        """Add the group's tensors (each through its ops) into the target; ``shared`` sources
        may also be read by other rules, so only the others are consumed."""
        names = [key, *(match.expand(s) for s in rule.sources[1:])]
        own = [n for i, n in enumerate(names) if i not in rule.shared]
        if any(n not in self.tensors for n in names) or any(n in self.consumed for n in own):
            return False  # an incomplete group: let a later rule (or the report) have it
        target = match.expand(rule.target)
        shape = tuple(self.shapes.get(target, self.tensors[names[0]].shape))
        ops = rule.source_ops or tuple(() for _ in names)
        parts = [apply_ops(o, self.tensors[n], shape) for o, n in zip(ops, names, strict=True)]
        if any(p.shape != parts[0].shape for p in parts):
            shapes = " + ".join(str(tuple(p.shape)) for p in parts)
            self.out.unknown_target[names[0]] = f"{target} (summed shapes differ: {shapes})"
        else:
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            self.emit(target, total, " + ".join(names))
        self.consumed.update(own)
        return True

    def split(self, rule: Split, key: str, match: re.Match[str]) -> bool:
        targets = [match.expand(t) for t in rule.targets]
        if rule.optional and not any(t in self.shapes for t in targets):
            self.leave([key], rule.optional)
            return True
        tensor = self.tensors[key]
        whole = apply_ops(rule.ops, tensor, tuple(tensor.shape))
        sizes = rule.sizes or tuple(
            self.shapes[t][rule.dim] if t in self.shapes else 0 for t in targets
        )
        if sum(sizes) != whole.shape[rule.dim] or 0 in sizes:
            self.out.unknown_target[key] = " + ".join(targets) + " (split sizes do not fit)"
        else:
            parts = torch.split(whole, list(sizes), dim=rule.dim)
            for target, part in zip(targets, parts, strict=True):
                self.emit(target, part, key)
        self.consumed.add(key)
        return True


def _all_zero(tensor: torch.Tensor) -> bool:
    """All zeros; a meta tensor (a full-size layout checked for names and shapes only) holds no
    values, so it is taken as zeros there."""
    return tensor.is_meta or not bool(tensor.any())


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
