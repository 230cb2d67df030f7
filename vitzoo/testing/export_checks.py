"""Deployment conformance checks: every model exports with ``torch.export`` and to ONNX.

Registered for every model kind (components in their host model, and architectures), so a
third-party architecture is held to them like a built-in one:

* :func:`check_torch_export_roundtrip` -- the model exports with a symbolic batch dimension,
  survives ``torch.export.save`` / ``load``, and the loaded program gives the eager outputs at the
  traced batch size and at another one. It catches data-dependent shapes (``int(tensor)``,
  boolean indexing), Python branches on tensor values, and shapes baked in at trace time.
* :func:`check_onnx_runtime` -- the ONNX file of that program, run in ONNX Runtime, gives the eager
  outputs within :data:`ONNX_ATOL` at both batch sizes. Slow (the dynamo ONNX exporter takes
  1-3 CPU seconds per tiny model); ONNX Runtime missing is a skip naming the extra to install.

Cost control: by default the ONNX check runs for a few built-in representatives
(:data:`DEFAULT_ONNX_BUILTINS`) and for every variant of a third-party plugin; with
``VITZOO_ALL_ONNX=1`` it runs for every variant. ``torch.export`` runs for all variants always.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import SkipTest

import torch

from vitzoo.testing.checks import (
    BATCH,
    MODEL_KINDS,
    Check,
    assert_same,
    example_input,
    fail,
    forward,
    register_check_generator,
    slow,
)
from vitzoo.testing.variants import Variant

#: Tolerance of ONNX Runtime against eager float32 (its kernels fuse and reorder reductions).
ONNX_ATOL = 1e-4
#: A second batch size, different from the traced one, proves the batch dimension is symbolic.
OTHER_BATCH = 3
#: Environment variable that runs the ONNX check for every variant, not only representatives.
ALL_ONNX_ENV = "VITZOO_ALL_ONNX"


def _program(variant: Variant) -> torch.export.ExportedProgram:
    """The batch-dynamic exported program of the variant's tiny model (cached per variant)."""
    from vitzoo.export import ExportError, export_program

    cache = variant._cache
    if "export_program" not in cache:
        model = variant.build()
        try:
            cache["export_program"] = export_program(model, example_input(model))
        except ExportError as exc:
            raise fail(variant, f"{exc} (see vitzoo.export for what breaks export)") from None
    return cache["export_program"]


def _inputs(variant: Variant) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    model = variant.build()
    return model, [example_input(model, BATCH), example_input(model, OTHER_BATCH, seed=2)]


def check_torch_export_roundtrip(variant: Variant) -> None:
    """torch.export (symbolic batch) -> save -> load gives the eager outputs at two batch sizes."""
    program = _program(variant)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt2"
        torch.export.save(program, path)
        loaded = torch.export.load(path).module()
    model, inputs = _inputs(variant)
    for x in inputs:
        try:
            out = forward(loaded, x)
        except Exception as exc:
            raise fail(
                variant,
                f"the exported program fails on a batch of {x.shape[0]}: "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}",
            ) from None
        assert_same(variant, f"torch.export output, batch {x.shape[0]}", out, forward(model, x))


@slow
def check_onnx_runtime(variant: Variant) -> None:
    """The ONNX export run in ONNX Runtime matches eager within ONNX_ATOL at two batch sizes."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise SkipTest("onnxruntime is not installed (pip install 'vitzoo[export]')")
    from vitzoo.export import ExportError, onnx_model
    from vitzoo.runtime import OnnxRuntimeModule

    try:
        proto = onnx_model(_program(variant))
    except ExportError as exc:
        raise fail(variant, str(exc)) from None
    session = OnnxRuntimeModule(proto.SerializeToString(), threads=1)
    model, inputs = _inputs(variant)
    for x in inputs:
        assert_same(
            variant,
            f"ONNX Runtime output, batch {x.shape[0]}",
            session(x),
            forward(model, x),
            atol=ONNX_ATOL,
            rtol=ONNX_ATOL,
        )


#: Built-in architectures whose ONNX export runs by default, one per family of traced operators:
#: isotropic SDPA attention (vit), conv stem + batch norm + cached attention bias (levit),
#: conv-heavy unfold/fold (mobilevit), data-dependent token selection made static (ats-vit).
DEFAULT_ONNX_BUILTINS = frozenset(
    {"architecture:vit", "architecture:levit", "architecture:mobilevit", "architecture:ats-vit"}
)


def runs_onnx_by_default(variant: Variant) -> bool:
    """The built-in representatives, and every variant of a third-party plugin.

    The ONNX check costs several CPU seconds per model; over all built-in variants it would
    exceed the suite's CI budget, so CI (and ``VITZOO_SLOW_CHECKS=1``) runs the representatives
    and ``VITZOO_ALL_ONNX=1`` runs everything. A third-party plugin's own few variants always
    run: its tests are the only place they are checked.
    """
    if variant.id in DEFAULT_ONNX_BUILTINS:
        return True
    record = variant.system.records.get(variant.plugin)
    module = record.module if record is not None else ""
    builtin = variant.plugin == "core" or module.startswith(("vitzoo.", "vitzoo_plugins"))
    return not builtin


def _all_onnx() -> bool:
    return os.environ.get(ALL_ONNX_ENV, "").strip().lower() in {"1", "true", "yes"}


@register_check_generator(*MODEL_KINDS)
def yield_export_checks(variant: Variant) -> Iterator[Check]:
    yield check_torch_export_roundtrip
    if _all_onnx() or runs_onnx_by_default(variant):
        yield check_onnx_runtime
