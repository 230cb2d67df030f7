"""Export a built model for deployment: a ``torch.export`` program (``.pt2``) or an ONNX file.

Both go through ``torch.export`` (the ONNX file via the ``torch.onnx`` dynamo exporter, which
starts from the same program), so a model that exports at all exports to both, and the
conformance checks (:mod:`vitzoo.testing.export_checks`) hold every registered architecture to
both. The artefact carries the model's spec (and class names, when given) in its metadata, so
``vitzoo predict --runtime onnxruntime`` can preprocess as training did without the checkpoint.

The batch dimension is symbolic by default, as in a timm or Hugging Face ONNX export: the same
file takes one image or a hundred. ``static_batch=N`` (``vitzoo export --static-batch N``)
fixes it for runtimes that need static shapes; such a graph refuses any other batch.

The ONNX side needs the optional ``export`` extra (``pip install 'vitzoo[export]'``: onnx,
onnxscript, onnxruntime); ``torch.export`` needs nothing beyond torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.errors import ExportError
from vitzoo.formats import CLASSES_KEY, INPUT_SIZE_KEY, SPEC_KEY

#: Export format -> the file suffix it is written with.
FORMATS: dict[str, str] = {"onnx": ".onnx", "torch-export": ".pt2"}
#: Batch of the example input traced for a batch-dynamic export: 2, not 1, because torch.export
#: specialises a dimension of size 1 (broadcasting), which would make the batch static.
EXPORT_BATCH = 2
#: Largest batch a batch-dynamic program accepts (torch.export wants a bound).
MAX_BATCH = 4096
#: The name of the input in an exported ONNX graph.
INPUT_NAME = "images"
#: The name of the symbolic batch axis in an ONNX graph (what timm/HF users see in Netron).
BATCH_AXIS = "batch"


#: torch's ONNX exporter logs one warning per torchvision operator it cannot register when
#: torchvision is missing (it is not a vitzoo dependency, and no ViT uses those operators).
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


class _NoTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "torchvision is not installed" not in record.getMessage()


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Export without torch's notices meant for its own developers: the "torchvision is not
    installed" log lines and the FutureWarning / DeprecationWarning its tracing code raises
    (``isinstance(treespec, LeafSpec)`` is deprecated ...). vitzoo's own errors still raise."""
    logger = logging.getLogger(_REGISTRATION_LOGGER)
    notice = _NoTorchvisionNotice()
    logger.addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.removeFilter(notice)


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The export format named by ``fmt``, or implied by the suffix of ``path``."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    for name, known in FORMATS.items():
        if suffix == known:
            return name
    raise ExportError(
        f"cannot tell the export format from {str(path)!r}: name it *.onnx or *.pt2, "
        f"or pass --format ({', '.join(FORMATS)})"
    )


def require_onnx() -> None:
    """Raise a plain ExportError when the ONNX half of the ``export`` extra is missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs {' and '.join(missing)}: pip install 'vitzoo[export]'"
        )


def example_for(model: nn.Module, batch: int = EXPORT_BATCH) -> torch.Tensor:
    """A random input at the model's own size (its ``example_input``), in its parameters' dtype."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return model.example_input(batch, dtype=dtype)


def check_static_batch(static_batch: int | None) -> None:
    if static_batch is not None and (isinstance(static_batch, bool) or static_batch < 1):
        raise ExportError(f"a static batch must be a positive integer, got {static_batch!r}")


def export_program(
    model: nn.Module,
    example: torch.Tensor | None = None,
    *,
    static_batch: int | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` of the eval-mode model; its batch dimension is symbolic (any batch from
    1 to :data:`MAX_BATCH`) unless ``static_batch`` fixes it.

    The default matches what a timm or Hugging Face user gets from an ONNX export: one image or
    many through the same graph. ``example`` (default: a random input of batch
    :data:`EXPORT_BATCH`, or ``static_batch``) is what is traced; for a dynamic batch its batch
    must be at least 2. Non-strict mode (tracing through Python, as the ONNX exporter does by
    default) so that the same models export to both formats.
    """
    check_static_batch(static_batch)
    model = model.eval()
    x = example_for(model, static_batch or EXPORT_BATCH) if example is None else example
    dynamic_shapes = None
    if static_batch is None:
        if x.shape[0] < 2:
            raise ExportError(
                f"a batch-dynamic export traces a batch of at least 2 (torch.export fixes a "
                f"dimension of size 1); the example has batch {x.shape[0]}"
            )
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    elif x.shape[0] != static_batch:
        raise ExportError(f"static batch {static_batch} but the example has batch {x.shape[0]}")
    try:
        with torch.no_grad(), quiet_exporter():
            return torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:
        raise ExportError(f"torch.export failed: {first_line(exc)}") from exc


def _to_onnx(program: torch.export.ExportedProgram, opset: int | None = None) -> Any:
    with quiet_exporter():
        return torch.onnx.export(
            program,
            input_names=[INPUT_NAME],
            output_names=["logits"],
            dynamo=True,
            optimize=True,
            verbose=False,
            opset_version=opset,
        )


def onnx_model(
    program: torch.export.ExportedProgram,
    *,
    metadata: Mapping[str, str] | None = None,
    opset: int | None = None,
) -> Any:
    """The ONNX ``ModelProto`` of an exported program (onnxscript graph optimisations applied),
    at ONNX ``opset`` (default: the exporter's own, 18 with torch 2.13).

    A symbolic batch dimension of the program stays symbolic in the ONNX graph. When the
    exporter's own decomposition fails, the program is lowered to core ATen first
    (``run_decompositions``, torch's default table) and converted again: with torch 2.13 /
    onnxscript 0.7 the exporter rewrites ``scaled_dot_product_attention`` with an attention bias
    into a layout other than the traced one, and the ``view`` that merges heads then fails
    (window and LSDA attention). Not always lowering first: that breaks other graphs (ATS).
    """
    require_onnx()
    try:
        onnx_program = _to_onnx(program, opset)
    except Exception as direct:
        try:
            onnx_program = _to_onnx(program.run_decompositions(), opset)
        except Exception:
            raise ExportError(f"ONNX conversion failed: {first_line(direct)}") from direct
    proto = onnx_program.model_proto
    name_batch_axis(proto)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def name_batch_axis(proto: Any) -> None:
    """Call the symbolic batch axis ``batch`` (the exporter names it after torch's symbol,
    ``s77``) wherever it appears: graph inputs, outputs and intermediate shapes."""
    first = proto.graph.input[0].type.tensor_type.shape.dim
    symbol = first[0].dim_param if len(first) else ""
    if not symbol:
        return  # a static batch
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = BATCH_AXIS


def model_metadata(model: nn.Module, classes: Sequence[str] | None = None) -> dict[str, str]:
    """The spec (YAML), input size and class names an artefact carries."""
    from vitzoo.spec import spec_to_yaml

    meta = {INPUT_SIZE_KEY: json.dumps(list(getattr(model, "input_size", ())))}
    spec = getattr(model, "vitzoo_spec", None)
    if spec is not None:
        meta[SPEC_KEY] = spec_to_yaml(spec)
    if classes is not None:
        meta[CLASSES_KEY] = json.dumps(list(classes))
    return meta


def export(
    model: nn.Module,
    path: str | Path,
    *,
    fmt: str | None = None,
    static_batch: int | None = None,
    classes: Sequence[str] | None = None,
    opset: int | None = None,
) -> Path:
    """Write ``model`` to ``path`` as ONNX or a ``torch.export`` program; returns the path.

    The batch dimension is dynamic (any batch size) unless ``static_batch`` fixes it, for
    runtimes that need fixed shapes. ``opset``: the ONNX opset (ONNX only).
    """
    path = Path(path)
    fmt = format_for(path, fmt)
    if fmt == "onnx":
        require_onnx()
    elif opset is not None:
        raise ExportError("an opset is an ONNX setting; a .pt2 program has none")
    program = export_program(model, static_batch=static_batch)
    meta = model_metadata(model, classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torch-export":
        torch.export.save(program, path, extra_files=meta)
        return path
    proto = onnx_model(program, metadata=meta, opset=opset)
    path.write_bytes(proto.SerializeToString())
    return path


def onnx_bytes(model: nn.Module, *, static_batch: int | None = None) -> bytes:
    """The serialised ONNX graph of ``model`` (for running it in ONNX Runtime without a file);
    batch-dynamic unless ``static_batch`` fixes it, as :func:`export`."""
    program = export_program(model, static_batch=static_batch)
    return onnx_model(program, metadata=model_metadata(model)).SerializeToString()


def first_line(exc: BaseException) -> str:
    """``TypeName: first line of the message`` (exporter errors are pages long)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
