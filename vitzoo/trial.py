"""The trial build: a validated spec is built and run once on the meta device before it is accepted.

Part of resolving a spec (:func:`vitzoo.builder.resolve`): validation checks fields, the
whole-spec rules (:mod:`vitzoo.rules`) check that the parts fit together, and this module checks
that the result builds, runs and fits the machine -- and reports what it measured (parameters,
activations, output shape, multiply-accumulates when asked), so callers need not build again to
learn it.

Why: a spec can be well-typed and still not run -- a padding larger than half its kernel, a
width that a grouped convolution cannot split, a head that returns the wrong shape, or simply a
model of 10^13 parameters. The meta device makes the real build nearly free (tensors have shapes
but no storage), so validation builds the model there, counts its parameters, runs one forward
pass (eval mode) on a batch of two and measures the activations it creates; a spec with an
objective also has the objective built around it and one training step's forward run (an
objective can be far larger than its backbone). Anything over the
budget, and anything that fails, becomes a :class:`~vitzoo.spec.SpecError` at a spec path instead of a crash
(or a hang, or an exhausted machine) later.

The budget is set by environment variables (documented in the README):

* ``VITZOO_MAX_PARAMS`` -- parameters (default 5e9, above the largest ViT presets);
* ``VITZOO_MAX_ACTIVATIONS`` -- elements created by a batch-1 forward pass (default 2e10,
  about 80 GB in float32);
* ``VITZOO_MAX_TENSORS`` -- tensors created while building, and by one objective step (default
  200000: a depth of a million blocks is refused in seconds instead of hanging);
* ``VITZOO_TRIAL_BUILD=0`` turns the trial build off (specs are then only type-checked).

Values accept ``5e9``-style floats; ``0`` or ``off`` disables that one limit.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from vitzoo.components.context import BuildContext
from vitzoo.errors import SpecError, SpecIssue
from vitzoo.objectives import build_objective
from vitzoo.spec import spec_to_yaml

DEFAULT_MAX_PARAMS = 5_000_000_000
DEFAULT_MAX_ACTIVATIONS = 20_000_000_000
DEFAULT_MAX_TENSORS = 200_000
TRIAL_BATCH = 2

_cache: OrderedDict[tuple[Any, str], Any] = OrderedDict()
_CACHE_SIZE = 512


class BudgetExceeded(RuntimeError):
    """Raised inside the trial when a limit is passed (so the build stops at once)."""

    def __init__(
        self, what: str, count: int, limit: int, variable: str, part: str = "model"
    ) -> None:
        super().__init__(what)
        self.what, self.count, self.limit, self.variable = what, count, limit, variable
        #: the spec section to blame: ``model``, or ``objective`` when the objective adds it
        self.part = part


@dataclass(frozen=True)
class TrialReport:
    """What the trial build measured (``None``: the meta device could not run that part).

    ``params`` counts the model and what its objective adds (heads, decoders, EMA teachers);
    ``model_params`` the model alone. ``activations`` is the larger of the model's eval forward
    and the objective's training step, per image. Where the meta device stopped early
    (data-dependent code), ``activations`` is what was counted up to that point -- a lower
    bound -- and ``activations_complete`` is False. ``macs`` (multiply-accumulates of one
    image's forward, as torch's flop counter counts them) is measured only when asked;
    ``objective_trainable`` is what the objective's optimiser would update (model + heads,
    frozen teachers excluded), for specs with an objective.
    """

    params: int
    activations: int | None
    output_shape: tuple[int, ...] | None
    activations_complete: bool = True
    model_params: int | None = None
    macs: int | None = None
    objective_trainable: int | None = None


@dataclass(frozen=True)
class Refusal:
    """A plain sentence saying why a validated spec cannot be built, and where to blame it."""

    message: str
    path: tuple[str, ...] = ("model",)

    def __str__(self) -> str:
        return self.message


def _limit(variable: str, default: int) -> int | None:
    raw = os.environ.get(variable, "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "off", "none", "no", "false"):
        return None
    try:
        return int(float(raw))
    except ValueError:
        return default


def trial_enabled() -> bool:
    return os.environ.get("VITZOO_TRIAL_BUILD", "1").strip().lower() not in (
        "0",
        "off",
        "no",
        "false",
    )


def _human(n: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _is_meta_limitation(exc: BaseException) -> bool:
    """The meta device cannot run data-dependent code (``.item()``, boolean masks, ...)."""
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, NotImplementedError) or "meta" in text or "data-dependent" in text


#: Stand-ins for reading a number out of a meta tensor, used only to *count* a training step.
#: Objectives draw random scalars (a mixup weight, a crop's size and offset, a flip) with
#: ``float(torch.rand(()))`` and the like, which the meta device cannot answer. For counting the
#: tensors a step creates, any plausible draw will do: 0.5 for a float, 0 for an index, True for
#: a condition (so a distribution's argument check passes). Never used to decide whether a
#: spec is valid -- a step that still fails is simply not counted.
_SCALAR_READS: dict[Any, Any] = {
    torch.Tensor.item: 0.5,
    torch.Tensor.__float__: 0.5,
    torch.Tensor.__int__: 0,
    torch.Tensor.__index__: 0,
    torch.Tensor.__bool__: True,
}


class _Counter(TorchFunctionMode):
    """Counts the elements and tensors every torch call creates; stops past a limit."""

    def __init__(self, max_params: int | None, max_tensors: int | None) -> None:
        super().__init__()
        self.max_params, self.max_tensors = max_params, max_tensors
        self.elements = 0
        self.tensors = 0
        self.limit: tuple[str, int | None, str] | None = None
        #: answer scalar reads of meta tensors with stand-ins (see _SCALAR_READS)
        self.stand_ins = False

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        if self.stand_ins and func in _SCALAR_READS and args and args[0].is_meta:
            return _SCALAR_READS[func]
        out = func(*args, **(kwargs or {}))
        if func is torch.nn.functional.scaled_dot_product_attention and len(args) >= 2:
            # the fused kernel hides the (B, H, N, N) matrix; its cost is still there
            q, k = args[0], args[1]
            self.elements += q.shape[:-1].numel() * k.shape[-2]
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.elements += t.numel()
                self.tensors += 1
        if self.limit is not None:
            self._enforce(*self.limit)
        return out

    def _enforce(self, what: str, limit: int | None, variable: str) -> None:
        if limit is not None and self.elements > limit:
            if what == "activations":  # counted for the trial batch, reported per image
                raise BudgetExceeded(
                    what, self.elements // TRIAL_BATCH, limit // TRIAL_BATCH, variable
                )
            shown = self.max_params if self.max_params else limit
            raise BudgetExceeded(what, self.elements, shown, variable)
        counts_tensors = what == "parameters" or self.stand_ins  # a build, or a step
        if counts_tensors and self.max_tensors and self.tensors > self.max_tensors:
            raise BudgetExceeded("tensors", self.tensors, self.max_tensors, "VITZOO_MAX_TENSORS")


def _run_trial(system: Any, spec: Any, macs: bool) -> TrialReport:
    registry = system.registry
    max_params = _limit("VITZOO_MAX_PARAMS", DEFAULT_MAX_PARAMS)
    max_acts = _limit("VITZOO_MAX_ACTIVATIONS", DEFAULT_MAX_ACTIVATIONS)
    counter = _Counter(max_params, _limit("VITZOO_MAX_TENSORS", DEFAULT_MAX_TENSORS))
    entry = registry.get("architecture", spec.model.type)
    # parameters are a fraction of what a build creates (init temporaries double it at most)
    build_limit = None if max_params is None else 3 * max_params
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        counter.limit = ("parameters", build_limit, "VITZOO_MAX_PARAMS")
        with counter:
            model = entry.factory(spec.model, BuildContext(registry=registry))
        params = sum(p.numel() for p in model.parameters())
        if max_params is not None and params > max_params:
            raise BudgetExceeded("parameters", params, max_params, "VITZOO_MAX_PARAMS")
        model.vitzoo_spec = spec
        input_size = tuple(getattr(model, "input_size", ()) or ())
        if not input_size:
            return TrialReport(params, None, None, model_params=params)
        x = torch.empty(TRIAL_BATCH, *input_size)
        acts_limit = None if max_acts is None else TRIAL_BATCH * max_acts
        counter.elements, counter.tensors = 0, 0
        counter.limit = ("activations", acts_limit, "VITZOO_MAX_ACTIVATIONS")
        shape, complete, counted_macs = _eval_forward(model, x, counter, macs)
        activations = counter.elements // TRIAL_BATCH
        report = TrialReport(params, activations, shape, complete, params, counted_macs)
        objective = getattr(spec, "objective", None)
        if objective is not None:
            limits = (build_limit, max_params, acts_limit)
            total, step, trainable = _objective_trial(system, objective, model, x, counter, limits)
            report = replace(
                report,
                params=total,
                activations=max(activations, step or 0),
                objective_trainable=trainable,
            )
    return report


def _eval_forward(
    model: Any, x: Any, counter: Any, macs: bool
) -> tuple[tuple[int, ...] | None, bool, int | None]:
    """One eval forward on meta under the counter: (output shape, complete?, MACs per image).

    MACs are counted by torch's own flop counter (one multiply-accumulate is two FLOPs), with
    grad mode on: torch's module tracker, which the counter uses, fails on some staged models
    under ``no_grad`` (on meta, grad mode costs nothing).
    """
    from torch.utils.flop_counter import FlopCounterMode

    flops = FlopCounterMode(display=False) if macs else None
    grad = torch.enable_grad() if macs else torch.no_grad()
    try:
        with counter, grad, flops if flops is not None else contextlib.nullcontext():
            out = model.eval()(x)
    except BudgetExceeded:
        raise
    except Exception as exc:
        if not _is_meta_limitation(exc):
            raise
        return None, False, None  # counted before the meta device stopped: a lower bound
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    counted = flops.get_total_flops() // 2 // TRIAL_BATCH if flops is not None else None
    return shape, True, counted


def _objective_trial(
    system: Any,
    objective: Any,
    model: Any,
    images: Any,
    counter: Any,
    limits: tuple[int | None, int | None, int | None],
) -> tuple[int, int | None, int | None]:
    """Build the objective around the meta model and run one training step's forward on meta.

    Why: an objective can be far larger than its backbone (a DINO head of 65536 prototypes,
    a paper-size MAE decoder, an EMA teacher doubling everything, many local crops), so a
    budget that counted only the model would let a validated spec exhaust the machine. Returns
    the parameters of model + objective (shared tensors once), the step's activations per
    image (``None`` where the meta device cannot run the step) and the objective's trainable
    parameters. Only a passed budget refuses the spec here: any other failure is left for the
    real build to report, as before.
    """
    build_limit, max_params, acts_limit = limits
    counter.elements, counter.tensors = 0, 0
    counter.limit = ("parameters", build_limit, "VITZOO_MAX_PARAMS")
    try:
        with counter:
            built = build_objective(objective, model.train(), system=system)
    except BudgetExceeded as exc:
        exc.part = "objective"
        raise
    except Exception:
        return sum(p.numel() for p in model.parameters()), None, None
    tensors = {id(t): t for t in (*model.parameters(), *built.parameters(), *built.buffers())}
    params = sum(t.numel() for t in tensors.values())
    trainable = sum(p.numel() for p in built.trainable_parameters())
    if max_params is not None and params > max_params:
        raise BudgetExceeded("parameters", params, max_params, "VITZOO_MAX_PARAMS", "objective")
    batch = images.shape[0]
    labels = torch.zeros(batch, dtype=torch.long)
    counter.elements, counter.tensors = 0, 0
    counter.limit = ("activations", acts_limit, "VITZOO_MAX_ACTIVATIONS")
    counter.stand_ins = True
    try:
        with counter, _nonzero_as_upper_bound():
            built.train()(images, labels)
    except BudgetExceeded as exc:
        exc.part = "objective"
        raise
    except Exception:
        return params, None, trainable
    finally:
        counter.stand_ins = False
    return params, counter.elements // batch, trainable


def _nonzero_as_upper_bound() -> Any:
    """Let ``nonzero`` (boolean masks) run on meta, counting every element as selected."""
    from torch.fx.experimental import _config

    return _config.patch(meta_nonzero_assume_all_nonzero=True)


def trial_build(system: Any, spec: Any, *, macs: bool = False) -> TrialReport | Refusal:
    """The trial's report, or a :class:`Refusal` saying why the spec cannot be built (cached
    per registry version, budget and spec)."""
    limits = tuple(
        os.environ.get(v, "")
        for v in ("VITZOO_MAX_PARAMS", "VITZOO_MAX_ACTIVATIONS", "VITZOO_MAX_TENSORS")
    )
    key = (getattr(system.registry, "version", None), limits, macs, spec_to_yaml(spec))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    try:
        result: TrialReport | Refusal = _run_trial(system, spec, macs)
    except BudgetExceeded as exc:
        name = {
            "tensors": "tensors created while building"
            if exc.part == "model"
            else "tensors created while building it or running one training step",
            "activations": "activation elements per image",
        }.get(exc.what, exc.what)
        what = "this model" if exc.part == "model" else "this model with its objective"
        result = Refusal(
            f"{what} needs more than {_human(exc.limit)} {name} "
            f"(counted {_human(exc.count)} before stopping); refused to protect the machine. "
            "Shrink the sizes, "
            f"or raise the budget with the environment variable {exc.variable}=N "
            f"(0 turns the limit off)",
            (exc.part,),
        )
    except (
        RuntimeError,
        ValueError,
        TypeError,
        IndexError,
        ZeroDivisionError,
        AssertionError,
    ) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        result = Refusal(
            f"these settings validate but the model cannot be built or run with them "
            f"(a trial build on the meta device failed: {message[:300]})"
        )
    _cache[key] = result
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return result


def _expected_shape(spec: Any, report: TrialReport) -> str | None:
    """Why the eval output is not (batch, num_classes), or None when it is."""
    num_classes = getattr(spec.model, "num_classes", None)
    shape = report.output_shape
    if shape is None or num_classes is None:
        return None
    if num_classes > 0 and shape != (TRIAL_BATCH, num_classes):
        return (
            f"with these pooling and head settings the model returns shape {list(shape)}, "
            f"not (batch, num_classes) = {[TRIAL_BATCH, num_classes]}"
        )
    if len(shape) != 2 or shape[0] != TRIAL_BATCH:
        return f"with these pooling and head settings the model returns shape {list(shape)}, not (batch, features)"
    return None


def check_trial(
    system: Any,
    spec: Any,
    *,
    file: str = "<spec>",
    positions: Mapping[tuple[Any, ...], tuple[int, int]] | None = None,
    macs: bool = False,
) -> TrialReport | None:
    """The trial's report; a SpecError (at ``model``, or the part to blame) if the trial build
    fails or passes the budget. ``None`` when ``VITZOO_TRIAL_BUILD=0`` turned the trial off."""
    if not trial_enabled():
        return None
    result = trial_build(system, spec, macs=macs)
    path: tuple[Any, ...] = ("model",)
    if isinstance(result, TrialReport):
        problem = _expected_shape(spec, result)
        if problem is None:
            return result
        path = ("model", "head")
    else:
        problem, path = result.message, result.path
    raise SpecError([SpecIssue.at(path, problem, file, positions)])
