"""Run a model outside eager PyTorch: ONNX Runtime behind the ``nn.Module`` call signature.

:class:`OnnxRuntimeModule` wraps an ONNX Runtime session in a parameter-free ``nn.Module`` whose
``forward`` takes and returns tensors, so the evaluation loop, ``vitzoo predict`` and ``vitzoo
bench`` drive either runtime through the same code (``.eval()``, ``model(x)``). It carries the
metadata the export wrote (spec, classes, input size: :mod:`vitzoo.export`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitzoo.errors import InputError, RuntimeUnavailable
from vitzoo.formats import CLASSES_KEY, INPUT_SIZE_KEY, SPEC_KEY

#: Values of ``--runtime``.
RUNTIMES = ("torch", "onnxruntime")


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeUnavailable(
            "--runtime onnxruntime needs onnxruntime: pip install 'vitzoo[export]'"
        ) from None
    return onnxruntime


class OnnxRuntimeModule(nn.Module):
    """An ONNX graph (bytes or a ``.onnx`` path) run by ONNX Runtime's CPU provider.

    ``threads`` sets the intra-op thread count (default: torch's, so both runtimes compete on
    equal terms in ``vitzoo bench``).
    """

    def __init__(self, graph: bytes | str | Path, *, threads: int | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = str(graph) if isinstance(graph, Path) else graph
        try:
            self.session = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise RuntimeUnavailable(f"ONNX Runtime cannot load the graph: {exc}") from None
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        batch = graph_input.shape[0] if graph_input.shape else None
        #: The one batch size a graph exported with a static batch takes (None: any).
        self.static_batch: int | None = batch if isinstance(batch, int) else None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map or {})

    @property
    def input_size(self) -> tuple[int, ...]:

        return tuple(json.loads(self.metadata.get(INPUT_SIZE_KEY, "[]")))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.static_batch is not None and x.shape[0] != self.static_batch:
            raise InputError(
                f"this ONNX graph was exported with a static batch of {self.static_batch} "
                f"(vitzoo export --static-batch {self.static_batch}) and refuses a batch of "
                f"{x.shape[0]}; export it again without --static-batch for any batch size"
            )
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(None, {self.input_name: array})
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(o)) for o in outputs)
        return tensors[0] if len(tensors) == 1 else tensors


def deployed(model: nn.Module, *, runtime: str = "torch", precision: str = "fp32") -> nn.Module:
    """``model`` as it runs in deployment: in ONNX Runtime, or in PyTorch at ``precision``.

    The one place ``--runtime`` / ``--precision`` of evaluate, predict and bench are applied.
    """
    from vitzoo.precision import for_inference

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return for_inference(model, precision)
    if precision != "fp32":
        raise ValueError("--runtime onnxruntime runs fp32 only (use --runtime torch for bf16)")
    from vitzoo.export import onnx_bytes

    session = OnnxRuntimeModule(onnx_bytes(model.eval().cpu()))
    session.vitzoo_spec = getattr(model, "vitzoo_spec", None)
    session.num_classes = getattr(model, "num_classes", None)
    return session


def load_onnx(path: str | Path, *, system: Any = None) -> tuple[OnnxRuntimeModule, Any]:
    """An exported ``.onnx`` file in ONNX Runtime, and the spec its metadata carries (or None)."""
    from vitzoo.spec import load_spec_text

    session = OnnxRuntimeModule(Path(path))
    spec = None
    text = session.metadata.get(SPEC_KEY)
    if text:
        if system is None:
            from vitzoo.plugins import get_plugin_system

            system = get_plugin_system()
        spec = load_spec_text(system.registry, text, file=str(path))
    session.vitzoo_spec = spec
    classes = json.loads(session.metadata.get(CLASSES_KEY, "null"))
    session.num_classes = len(classes) if classes else None
    return session, classes
