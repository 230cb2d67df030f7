"""The one error type of weight loading: a plain message, shown by the CLI as one line."""

from __future__ import annotations

from vitzoo.checkpoint import CheckpointError


class WeightsError(CheckpointError):
    """A weights source cannot be read, recognised or loaded; the message says why and what to do."""
