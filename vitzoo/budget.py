"""The trial build: a validated spec is built and run once on the meta device before it is accepted.

Why: a spec can be well-typed and still not run -- a padding larger than half its kernel, a
width that a grouped convolution cannot split, a head that returns the wrong shape, or simply a
model of 10^13 parameters. The meta device makes the real build nearly free (tensors have shapes
but no storage), so validation builds the model there, counts its parameters, runs one forward
pass (eval mode) on a batch of two and measures the activations it creates. Anything over the
budget, and anything that fails, becomes a :class:`~vitzoo.spec.SpecError` at a spec path instead of a crash
(or a hang, or an exhausted machine) later.

The budget is set by environment variables (documented in the README):

* ``VITZOO_MAX_PARAMS`` -- parameters (default 5e9, above the largest ViT presets);
* ``VITZOO_MAX_ACTIVATIONS`` -- elements created by a batch-1 forward pass (default 2e10,
  about 80 GB in float32);
* ``VITZOO_MAX_TENSORS`` -- tensors created while building (default 200000: a depth of a million
  blocks is refused in seconds instead of hanging);
* ``VITZOO_TRIAL_BUILD=0`` turns the trial build off (specs are then only type-checked).

Values accept ``5e9``-style floats; ``0`` or ``off`` disables that one limit.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_PARAMS = 5_000_000_000
DEFAULT_MAX_ACTIVATIONS = 20_000_000_000
DEFAULT_MAX_TENSORS = 200_000
TRIAL_BATCH = 2

_cache: OrderedDict[tuple[Any, str], Any] = OrderedDict()
_CACHE_SIZE = 512


class BudgetExceeded(RuntimeError):
    """Raised inside the trial when a limit is passed (so the build stops at once)."""

    def __init__(self, what: str, count: int, limit: int, variable: str) -> None:
        super().__init__(what)
        self.what, self.count, self.limit, self.variable = what, count, limit, variable


@dataclass(frozen=True)
class TrialReport:
    """What the trial build measured (``None``: the meta device could not run that part)."""

    params: int
    activations: int | None
    output_shape: tuple[int, ...] | None


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


def _run_trial(registry: Any, spec: Any) -> TrialReport:
    import torch
    from torch.overrides import TorchFunctionMode

    from vitzoo.components.context import BuildContext

    max_params = _limit("VITZOO_MAX_PARAMS", DEFAULT_MAX_PARAMS)
    max_acts = _limit("VITZOO_MAX_ACTIVATIONS", DEFAULT_MAX_ACTIVATIONS)
    max_tensors = _limit("VITZOO_MAX_TENSORS", DEFAULT_MAX_TENSORS)

    class Counter(TorchFunctionMode):
        """Counts the elements and tensors every torch call creates; stops past a limit."""

        def __init__(self) -> None:
            super().__init__()
            self.elements = 0
            self.tensors = 0
            self.limit: tuple[str, int | None, str] | None = None

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
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
                what, limit, variable = self.limit
                if limit is not None and self.elements > limit:
                    if what == "activations":  # counted for the trial batch, reported per image
                        raise BudgetExceeded(
                            what, self.elements // TRIAL_BATCH, limit // TRIAL_BATCH, variable
                        )
                    shown = max_params if max_params else limit
                    raise BudgetExceeded(what, self.elements, shown, variable)
                if what == "parameters" and max_tensors and self.tensors > max_tensors:
                    raise BudgetExceeded("tensors", self.tensors, max_tensors, "VITZOO_MAX_TENSORS")
            return out

    entry = registry.get("architecture", spec.model.type)
    counter = Counter()
    # parameters are a fraction of what a build creates (init temporaries double it at most)
    build_limit = None if max_params is None else 3 * max_params
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        counter.limit = ("parameters", build_limit, "VITZOO_MAX_PARAMS")
        with counter:
            model = entry.factory(spec.model, BuildContext(registry=registry))
        params = sum(p.numel() for p in model.parameters())
        if max_params is not None and params > max_params:
            raise BudgetExceeded("parameters", params, max_params, "VITZOO_MAX_PARAMS")
        objective = getattr(spec, "objective", None)
        if objective is not None:
            from vitzoo.objectives import check_compatible

            model.vitzoo_spec = spec
            check_compatible(objective, model, registry)  # what the built model really offers
        input_size = tuple(getattr(model, "input_size", ()) or ())
        if not input_size:
            return TrialReport(params, None, None)
        x = torch.empty(TRIAL_BATCH, *input_size)
        acts_limit = None if max_acts is None else TRIAL_BATCH * max_acts
        counter.elements, counter.tensors = 0, 0
        counter.limit = ("activations", acts_limit, "VITZOO_MAX_ACTIVATIONS")
        try:
            with counter, torch.no_grad():
                out = model.eval()(x)
        except BudgetExceeded:
            raise
        except Exception as exc:
            if _is_meta_limitation(exc):
                return TrialReport(params, None, None)
            raise
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    return TrialReport(params, counter.elements // TRIAL_BATCH, shape)


def trial_build(registry: Any, spec: Any) -> TrialReport | str:
    """The trial's report, or a plain sentence saying why the spec cannot be built (cached)."""
    from vitzoo.spec import SpecError, spec_to_yaml

    limits = tuple(
        os.environ.get(v, "")
        for v in ("VITZOO_MAX_PARAMS", "VITZOO_MAX_ACTIVATIONS", "VITZOO_MAX_TENSORS")
    )
    key = (getattr(registry, "version", None), limits, spec_to_yaml(spec))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    try:
        result: TrialReport | str = _run_trial(registry, spec)
    except SpecError as exc:
        result = exc
    except BudgetExceeded as exc:
        name = {
            "tensors": "tensors created while building",
            "activations": "activation elements per image",
        }.get(exc.what, exc.what)
        result = (
            f"this model needs more than {_human(exc.limit)} {name} "
            f"(counted {_human(exc.count)} before stopping); refused to protect the machine. "
            "Shrink the sizes, "
            f"or raise the budget with the environment variable {exc.variable}=N "
            f"(0 turns the limit off)"
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
        result = (
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


def check_budget(
    registry: Any,
    spec: Any,
    *,
    file: str = "<spec>",
    positions: Mapping[tuple[Any, ...], tuple[int, int]] | None = None,
) -> TrialReport | None:
    """Raise a SpecError (at ``model``) if the trial build fails or passes the budget."""
    from vitzoo.spec import SpecError, SpecIssue

    if not trial_enabled():
        return None
    result = trial_build(registry, spec)
    path: tuple[Any, ...] = ("model",)
    if isinstance(result, SpecError):
        issues = []
        for issue in result.issues:
            probe = tuple(issue.path.split("."))
            while probe and probe not in (positions or {}):
                probe = probe[:-1]
            line, col = (positions or {}).get(probe, (None, None))
            issues.append(SpecIssue(issue.path, issue.message, file, line, col))
        raise SpecError(issues)
    if isinstance(result, TrialReport):
        problem = _expected_shape(spec, result)
        if problem is None:
            return result
        path = ("model", "head")
    else:
        problem = result
    probe = path
    positions = positions or {}
    while probe and probe not in positions:
        probe = probe[:-1]
    line, col = positions.get(probe, (None, None))
    raise SpecError([SpecIssue(".".join(path), problem, file, line, col)])
