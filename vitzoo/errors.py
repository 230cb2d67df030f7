"""Every error vitzoo raises across layers, in one leaf module that imports nothing of vitzoo.

Why a leaf: an error class is shared by the layer that raises it and every layer above that
catches it. Defined inside a higher module (a checkpoint error inside ``checkpoint.py``), it
dragged that module -- and everything it imports -- into every lower module that wanted to
raise it. Here, raising and catching cost no import of anything else.

All derive from :class:`VitzooError`; those whose cause is something the user gave (a spec, a
file, a setting) also derive from :class:`InputError`, which the command line prints as plain
lines with exit status 2 instead of a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class VitzooError(Exception):
    """Base of every error vitzoo raises on purpose."""


class InputError(VitzooError, ValueError):
    """Something the user gave is wrong; the message says what to change (CLI: exit 2)."""


# -- registration ----------------------------------------------------------------------------
class RegistrationError(VitzooError, ValueError):
    """A plugin registered something invalid (bad name, bad config class, duplicate)."""


class PluginLoadError(VitzooError, RuntimeError):
    """Raised in strict mode when a plugin fails to load or register."""


# -- specs -----------------------------------------------------------------------------------
#: The ``file`` of an issue in a spec that was never a file (a mapping, a preset name).
NO_FILE = "<spec>"


@dataclass(frozen=True)
class SpecIssue:
    """One problem: where it is (file, line, column, spec path) and what to change."""

    path: str
    message: str
    file: str = NO_FILE
    line: int | None = None
    column: int | None = None

    @classmethod
    def at(
        cls,
        path: tuple[Any, ...],
        message: str,
        file: str = NO_FILE,
        positions: Mapping[tuple[Any, ...], tuple[int, int]] | None = None,
    ) -> SpecIssue:
        """The issue at spec ``path``, on the line of that path or of its nearest parent
        written in the file (a default the user never wrote has no line of its own)."""
        positions = positions or {}
        probe = path
        while probe and probe not in positions:
            probe = probe[:-1]
        line, col = positions.get(probe, (None, None))
        return cls(".".join(str(p) for p in path), message, file, line, col)

    def __str__(self) -> str:
        """``file:line:col  path: message``; a part that is not known is left out (never
        ``<spec>  <root>:`` placeholders in front of the sentence)."""
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        if where == NO_FILE:
            where = ""
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}  {what}" if where else what


class SpecError(InputError):
    """A spec is invalid. ``issues`` holds every problem found, each at its file position."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class SpecValueError(ValueError):
    """A cross-field rule failed; ``path`` points at the offending field, relative to the config.

    Raised from a config's validators or ``check`` so that the error is reported at the field
    the user has to change (``model.patch.patch_size``), not at the enclosing model. A plain
    ``ValueError`` on purpose: pydantic turns ``ValueError`` raised in validators into
    validation errors, which the spec layer then reports with this path.
    """

    def __init__(self, path: str | tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path: tuple[str | int, ...] = tuple(path.split(".")) if isinstance(path, str) else path
        self.message = message

    def under(self, *prefix: str | int) -> SpecValueError:
        return SpecValueError((*prefix, *self.path), self.message)


class OverrideSyntaxError(InputError):
    """A ``KEY=VALUE`` assignment that cannot be read (no ``=``, no key, or unparsable YAML)."""


# -- files -----------------------------------------------------------------------------------
class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, or does not match its spec."""


class WeightsError(CheckpointError):
    """A weights source cannot be read, recognised or loaded; the message says why and what
    to do. A :class:`CheckpointError` too, so callers catching bad checkpoints catch it."""


class DataError(InputError):
    """The dataset folder is missing, empty, or (with ``strict``) holds an unreadable image."""


# -- models ----------------------------------------------------------------------------------
class InputSizeError(InputError):
    """A tensor whose shape depends on the input size and that no rule can resample."""


class FeatureIndexError(InputError):
    """Feature-layer indices out of range or repeated (``forward_intermediates``)."""


# -- deployment ------------------------------------------------------------------------------
class ExportError(VitzooError):
    """A model cannot be exported (or the export runtime is missing); the message says why."""


class RuntimeUnavailable(VitzooError):
    """The requested inference runtime is not installed."""


class BenchError(InputError):
    """Benchmark options that cannot work together."""


# -- training ------------------------------------------------------------------------------
class DistributedError(VitzooError, RuntimeError):
    """The processes of a multi-process run stopped hearing from each other (one died, hung or
    timed out); raised instead of waiting forever, naming the rank and the wait."""


# -- warnings --------------------------------------------------------------------------------
class VitzooWarning(UserWarning):
    """Base of the warnings vitzoo gives a Python user (shown by default, also in notebooks)."""


class WeightsAdaptationWarning(VitzooWarning):
    """Pretrained weights were changed to fit the model: a head re-initialised or matched by
    class name, positions resampled, the input layer adapted, a setting that differs from the
    weights'. The command line prints these as plain lines instead."""


class PerformanceWarning(VitzooWarning):
    """A setting that runs, but far slower than it should here (bf16 on a CPU without bf16)."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = VitzooWarning) -> None:
    """``warnings.warn`` pointing at the first caller outside vitzoo (the user's line), so
    the warning names the call the user wrote and Python's once-per-location filter works."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
