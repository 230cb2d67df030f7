"""The spec contract as a check: "a spec that resolves builds and runs; one that does not gets
a plain error" (resolving = validation, the whole-spec rules and the trial build).

:func:`mutate` turns a registered example into a plausible or an invalid neighbour (a size
halved, a rate set to 1, a component swapped for another registered one, a typo'd key, a string
where a number goes, NaN, 2**63, ...); :func:`check_contract` holds one spec to the contract:

* **rejected** -> a :class:`~vitzoo.spec.SpecError` (never another exception) whose every line
  names a spec path (``model.patch.patch_size``) and says what is wrong without pydantic's or
  torch's vocabulary;
* **accepted** -> the model builds, a training-mode forward and backward pass are finite, the
  eval output has the declared shape (batch, num_classes), and the spec's objective, if any,
  builds and takes a finite step.

The property test (``tests/test_spec_contract.py``, hypothesis) draws thousands of such specs
from every registered example; :func:`check_spec_mutations` is the conformance-suite version
that any third-party component gets for free (a few seeded mutations of its own example).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from vitzoo.builder import resolve_spec
from vitzoo.errors import SpecError, SpecIssue

#: Top-level spec sections an issue path may start with.
SECTIONS = ("model", "objective", "train", "data", "preset", "weights")
#: Words that mean a message leaked an implementation's vocabulary instead of saying the problem.
JARGON = (
    "Input should",
    "instance of",
    "tagged-union",
    "function-after",
    "function-wrap",
    "union_tag",
    "discriminator",
    "Traceback",
    "pydantic",
    "[type=",
    "Unable to extract",
    "model_type",
)
#: An accepted spec larger than this is only built on the meta device (the trial build did);
#: running it for real would cost seconds of CPU per example.
RUN_MAX_PARAMS = 3_000_000
RUN_MAX_ACTIVATIONS = 30_000_000

#: Mutations that keep the spec plausible, and ones that make it invalid.
VALID_MUTATIONS = (
    "halve",
    "double",
    "plus-one",
    "minus-one",
    "small-int",
    "zero",
    "flip",
    "rate",
    "retype",
    "retype-bare",
    "set-field",
)
INVALID_MUTATIONS = (
    "negative",
    "huge",
    "big",
    "as-string",
    "true",
    "null",
    "nan",
    "inf",
    "triple",
    "fraction",
    "typo-key",
    "extra-key",
    "drop-key",
)
MUTATIONS = VALID_MUTATIONS + INVALID_MUTATIONS


@dataclass(frozen=True)
class Outcome:
    """How one spec fared: ``rejected``, ``accepted`` (ran), or ``accepted-large`` (meta only)."""

    status: str
    detail: str = ""


class ContractViolation(AssertionError):
    """A spec broke the contract; the message holds the spec as YAML."""


def leaf_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value (leaves and mappings) in a nested spec mapping."""
    out: list[tuple[Any, ...]] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.append((*prefix, key))
            out += leaf_paths(value, (*prefix, key))
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            out.append((*prefix, i))
            out += leaf_paths(value, (*prefix, i))
    return out


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        data = data[step]
    return data


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    return _get(data, path[:-1])


def _types_for(registry: Any, data: Any, path: tuple[Any, ...]) -> list[str]:
    """Registered types allowed for the component whose ``type`` sits at ``path``."""
    from vitzoo.spec import _allowed_types, spec_model

    try:
        return _allowed_types(spec_model(registry), data, path[:-1])
    except Exception:  # noqa: BLE001 - a path the schema does not know: nothing to swap in
        return []


def _fields_for(registry: Any, data: Any, parent: tuple[Any, ...]) -> list[str]:
    from vitzoo.spec import _allowed_fields, spec_model

    try:
        return [f for f in _allowed_fields(spec_model(registry), data, parent) if f != "type"]
    except Exception:  # noqa: BLE001
        return []


def _as_plain(data: Any) -> Any:
    """Nested lists and dicts only (YAML gives lists; examples may hold tuples)."""
    if isinstance(data, Mapping):
        return {k: _as_plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_as_plain(v) for v in data]
    return copy.deepcopy(data)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _anything(value: Any) -> bool:
    return True


#: The mutations that replace the value at the path: name -> (applies to the value?, the new
#: value from the old one and the seeded generator). A mutation that does not apply is a no-op.
_REPLACEMENTS: dict[str, tuple[Callable[[Any], bool], Callable[[Any, random.Random], Any]]] = {
    "halve": (_numeric, lambda v, _: v // 2 if isinstance(v, int) else v / 2),
    "double": (_numeric, lambda v, _: v * 2),
    "plus-one": (_numeric, lambda v, _: v + 1),
    "minus-one": (_numeric, lambda v, _: v - 1),
    "small-int": (_anything, lambda _, pick: pick.choice([1, 2, 3, 4, 5, 8, 16, 32])),
    "zero": (_anything, lambda v, _: 0 if not isinstance(v, float) else 0.0),
    "flip": (lambda v: isinstance(v, bool), lambda v, _: not v),
    "rate": (_anything, lambda _, pick: pick.choice([0.0, 0.1, 0.5, 0.9, 1.0])),
    "negative": (_numeric, lambda v, _: -abs(v) - 1),
    "huge": (_anything, lambda v, _: 2**63),
    "big": (_anything, lambda v, _: 10**6),
    "as-string": (_anything, lambda v, _: str(v)),
    "true": (_anything, lambda v, _: True),
    "null": (_anything, lambda v, _: None),
    "nan": (_anything, lambda v, _: math.nan),
    "inf": (_anything, lambda v, _: math.inf),
    "triple": (lambda v: not isinstance(v, Mapping), lambda v, _: [v, v, v]),
    "fraction": (_numeric, lambda v, _: v + 0.5),
}


def _retype(
    out: Any, path: tuple[Any, ...], pick: random.Random, registry: Any, bare: bool
) -> None:
    """Swap the component's ``type`` for another registered one; ``bare``: drop its fields."""
    value = _get(out, path)
    if path[-1] != "type" or not isinstance(value, str):
        return
    allowed = [t for t in _types_for(registry, out, path) if t != value]
    if not allowed:
        return
    new = pick.choice(allowed)
    if bare and len(path) > 1:
        _parent(out, path[:-1])[path[-2]] = {"type": new}
    else:
        _parent(out, path)[path[-1]] = new


def _set_field(out: Any, path: tuple[Any, ...], pick: random.Random, registry: Any) -> None:
    """Give a component one of its allowed fields a small plausible value."""
    value = _get(out, path)
    if not isinstance(value, Mapping):
        return
    fields = _fields_for(registry, out, path)
    if fields:
        field = pick.choice(fields)
        value[field] = pick.choice([0, 1, 2, 4, 8, 0.0, 0.25, True, False])


def _rekey(out: Any, path: tuple[Any, ...], mutation: str, pick: random.Random) -> None:
    """The key mutations: a letter dropped from the key, an unknown key added, the key dropped."""
    parent, key = _parent(out, path), path[-1]
    if not isinstance(parent, dict):
        return
    if mutation == "typo-key" and isinstance(key, str) and len(key) > 2:
        value = parent.pop(key)
        cut = pick.randrange(len(key))
        parent[key[:cut] + key[cut + 1 :]] = value
    elif mutation == "extra-key":
        parent["colour"] = 3
    elif mutation == "drop-key":
        del parent[key]


def mutate(
    data: Mapping[str, Any], path: tuple[Any, ...], mutation: str, choice: int, registry: Any
) -> dict[str, Any]:
    """A copy of ``data`` with ``mutation`` applied at ``path`` (``choice`` picks values)."""
    out = _as_plain(data)
    if not path:
        return out
    parent, key = _parent(out, path), path[-1]
    value = parent[key]  # a path that is not in ``data`` is a KeyError, whatever the mutation
    pick = random.Random(choice)
    if mutation in _REPLACEMENTS:
        applies, replace = _REPLACEMENTS[mutation]
        if applies(value):
            parent[key] = replace(value, pick)
    elif mutation in ("retype", "retype-bare"):
        _retype(out, path, pick, registry, bare=mutation == "retype-bare")
    elif mutation == "set-field":
        _set_field(out, path, pick, registry)
    elif mutation in ("typo-key", "extra-key", "drop-key"):
        _rekey(out, path, mutation, pick)
    return out


def _plain_issue(issue: SpecIssue, data: Mapping[str, Any]) -> str | None:
    """Why an issue line breaks the "plain words at a spec path" rule, or None."""
    head = issue.path.split(".")[0] if issue.path else ""
    if head not in SECTIONS and head not in data:
        return f"the issue names no spec path: {issue}"
    for word in JARGON:
        if word in issue.message:
            return f"the message uses {word!r} (implementation vocabulary): {issue}"
    if not issue.message.strip():
        return f"the message is empty: {issue}"
    return None


def _as_yaml(data: Any) -> str:
    try:
        return yaml.safe_dump(data, sort_keys=False)
    except yaml.YAMLError:
        return repr(data)


def _finite(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    if isinstance(value, tuple | list):
        return all(_finite(v) for v in value)
    return True


def _total(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return sum(_total(v) for v in value)
    return value.float().sum()


def run_accepted(system: Any, spec: Any) -> Outcome:
    """Build the spec for real (CPU) and hold it to the "runs" half of the contract."""
    import torch

    from vitzoo.builder import build_from_spec
    from vitzoo.trial import TRIAL_BATCH, TrialReport, trial_build

    report = trial_build(system, spec)
    if not isinstance(report, TrialReport):
        raise ContractViolation(f"resolution accepted a spec its own trial build refused: {report}")
    # activations may be a lower bound (meta stopped early): still enough to skip huge runs
    if report.params > RUN_MAX_PARAMS or (report.activations or 0) > RUN_MAX_ACTIVATIONS:
        return Outcome("accepted-large", f"{report.params} params")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_from_spec(spec, system=system)
        x = model.example_input(TRIAL_BATCH)
        model.train()
        out = model(x)
        if not _finite(out):
            raise ContractViolation("the training-mode forward pass gave NaN/inf")
        _total(out).backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not _finite(p.grad)]
        if bad:
            raise ContractViolation(f"non-finite gradients in {bad[:3]}")
        model.eval()
        with torch.no_grad():
            logits = model(x)
        classes = getattr(model, "num_classes", None)
        want = (
            (TRIAL_BATCH, classes) if classes else (TRIAL_BATCH, getattr(model, "num_features", -1))
        )
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
            shape = (
                tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            )
            raise ContractViolation(f"eval output {shape}, declared {want}")
        if getattr(spec, "objective", None) is not None:
            from vitzoo.objectives import build_objective

            model.zero_grad(set_to_none=True)
            objective = build_objective(spec, model.train(), system=system).train()
            batch = 4
            images = torch.rand(batch, *model.input_size)
            labels = torch.randint(0, max(int(classes or 1), 1), (batch,))
            result = objective(images, labels)
            if not _finite(result.loss):
                raise ContractViolation(f"objective {spec.objective.type!r} gave a non-finite loss")
            result.loss.backward()
    return Outcome("accepted")


def check_contract(system: Any, data: Mapping[str, Any]) -> Outcome:
    """Hold one spec (a mapping, as YAML gives it) to the contract; raise ContractViolation."""
    where = f"\n--- the spec ---\n{_as_yaml(data)}"
    try:
        spec = resolve_spec(data, system=system)
    except SpecError as exc:
        for issue in exc.issues:
            reason = _plain_issue(issue, data)
            if reason:
                raise ContractViolation(f"unclear rejection: {reason}{where}") from None
        return Outcome("rejected", exc.issues[0].message[:80])
    except Exception as exc:
        raise ContractViolation(
            f"validation crashed instead of reporting: {type(exc).__name__}: {exc}{where}"
        ) from exc
    try:
        return run_accepted(system, spec)
    except ContractViolation as exc:
        raise ContractViolation(f"accepted, but {exc}{where}") from None
    except Exception as exc:
        raise ContractViolation(
            f"accepted, but crashed: {type(exc).__name__}: {str(exc)[:500]}{where}"
        ) from exc


def seeded_mutations(
    data: Mapping[str, Any], registry: Any, count: int, seed: int, *, under: tuple[Any, ...] = ()
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``count`` reproducible single mutations of ``data`` at paths under ``under``."""
    rng = random.Random(seed)
    paths = [p for p in leaf_paths(data) if p[: len(under)] == under] or leaf_paths(data)
    for _ in range(count):
        path = rng.choice(paths)
        mutation = rng.choice(MUTATIONS)
        yield (
            f"{mutation} at {'.'.join(map(str, path))}",
            mutate(data, path, mutation, rng.randrange(10**6), registry),
        )


# --------------------------------------------------------------------------------------------
# The conformance-suite check: every registered part, third-party ones included
# --------------------------------------------------------------------------------------------
#: Seeded mutations per variant in the conformance suite (``VITZOO_CONFORMANCE_MUTATIONS``).
CONFORMANCE_MUTATIONS = 2


def _own_path(variant: Any) -> tuple[Any, ...]:
    """Where the variant's own config sits in its tiny spec."""
    from vitzoo.testing.variants import HOST_FIELD

    if variant.kind == "architecture":
        return ("model",)
    if variant.kind == "objective":
        return ("objective",)
    field = (variant.entry.example or {}).get("field", HOST_FIELD.get(variant.kind, ""))
    return ("model", *str(field).split("."))


def check_spec_mutations(variant: Any) -> None:
    """Mutations of the variant's own example hold to the spec contract.

    A few seeded mutations (``VITZOO_CONFORMANCE_MUTATIONS``, default 2) of the fields the
    variant owns: each must either be rejected with a plain error at a spec path, or build and
    run with finite outputs of the declared shape. So a third-party component that validates
    a value it cannot run with fails here, not in its users' hands.
    """
    import os
    import zlib

    count = int(os.environ.get("VITZOO_CONFORMANCE_MUTATIONS", CONFORMANCE_MUTATIONS))
    data = variant.tiny_spec_data()
    seed = zlib.crc32(variant.id.encode())
    registry = variant.system.registry
    for what, mutated in seeded_mutations(data, registry, count, seed, under=_own_path(variant)):
        try:
            check_contract(variant.system, mutated)
        except ContractViolation as exc:
            raise AssertionError(f"{variant.id}: mutation {what}: {exc}") from None


def _yield_contract_checks(variant: Any) -> Iterator[Any]:
    yield check_spec_mutations


def register_contract_checks() -> None:
    from vitzoo.testing.checks import MODEL_KINDS, register_check_generator

    register_check_generator(*MODEL_KINDS, "objective")(_yield_contract_checks)


register_contract_checks()
