"""Reuse a tensor derived from parameters (e.g. a gathered attention bias) while nothing changed.

Relative-position and attention biases are a small learned table gathered into a (heads, Nq, Nk)
tensor by a fixed index. Gathering on every forward call is wasted work at inference: the table
only changes when training updates it or a checkpoint is loaded. :class:`InferenceCache` keeps the
last result and recomputes it when autograd is on (training needs the gather in the graph) or when
any source tensor was modified in place (optimizer step, ``load_state_dict``: both bump the
tensor's version counter), moved (``.to()``) or re-created. Writes through ``param.data`` bump no
version counter, so owners also :meth:`~InferenceCache.clear` it in ``train()``/``eval()``. No
state is added to the module's ``state_dict`` and nothing is read at build time (meta-device
builds are unaffected).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class InferenceCache:
    """Memo of ``compute()``, valid while autograd is off and the ``sources`` are unchanged."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: torch.Tensor | None = None

    def clear(self) -> None:
        """Forget the cached value (the next ``get`` recomputes it)."""
        self._key = self._value = None

    def get(self, compute: Callable[[], torch.Tensor], *sources: torch.Tensor) -> torch.Tensor:
        """``compute()``, or its cached result when no ``source`` changed since it was cached."""
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return compute()  # a traced graph must contain the op (and fake tensors have no data)
        if torch.is_grad_enabled() or any(s.is_inference() for s in sources):
            # Training needs the op in the graph; inference tensors have no version counter.
            self.clear()
            return compute()
        key = tuple((s.device, s.dtype, s.data_ptr(), s._version) for s in sources)
        if self._value is None or key != self._key:
            self._value, self._key = compute(), key
        return self._value
