"""How a command ends when something goes wrong: plain lines, an exit status, no traceback.

Errors the user can fix (bad specs, checkpoints, data or sizes: every
:class:`~vitzoo.errors.InputError`; a missing plugin or preset) are printed as plain lines
(``file:line:col  path: message`` for specs) on stderr with exit status 2. Anything else that
escapes a command prints one line and "run with --debug for the traceback", exit status 1
(:class:`VitzooGroup`, the root group's class); ``--debug`` (or ``VITZOO_DEBUG=1``) lets the
exception through.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from vitzoo.commands.common import err
from vitzoo.errors import InputError, PluginLoadError
from vitzoo.terminal import make_console


def fail_with_spec_error(exc: Exception) -> NoReturn:
    """Print every line of a SpecError / CheckpointError (any InputError) and exit status 2."""
    for line in str(exc).splitlines():
        err.print(line, markup=False, highlight=False)
    sys.exit(2)


def fail_plainly(message: str) -> NoReturn:
    """One ``error: ...`` line on stderr (white space folded) and exit status 2."""
    make_console(stderr=True).print(
        f"error: {' '.join(message.split())}", markup=False, highlight=False
    )
    sys.exit(2)


def debugging(ctx: click.Context | None) -> bool:
    """``--debug`` on the root command, or ``VITZOO_DEBUG=1``: show tracebacks."""
    root = ctx.find_root() if ctx is not None else None
    flag = bool(root.params.get("debug")) if root is not None else False
    return flag or os.environ.get("VITZOO_DEBUG", "").strip().lower() in {"1", "true", "yes"}


def report_error(exc: Exception, ctx: click.Context | None = None) -> NoReturn:
    """Plain lines for errors the user can fix (exit 2); one line for the rest (exit 1).

    "The user can fix it" is :class:`vitzoo.errors.InputError` (specs, checkpoints, weights,
    data, input sizes ...), whose messages say what to change, plus an unknown plugin or name.
    """
    if isinstance(exc, InputError):
        fail_with_spec_error(exc)
    if isinstance(exc, PluginLoadError | LookupError) and not isinstance(exc, KeyError):
        err.print(f"vitzoo: {exc}", markup=False, highlight=False)
        sys.exit(2)
    if debugging(ctx):
        raise exc
    message = " ".join(str(exc).split()) or "(no message)"
    err.print(
        f"vitzoo: internal error: {type(exc).__name__}: {message}", markup=False, highlight=False
    )
    err.print("run with --debug for the traceback", markup=False, highlight=False)
    sys.exit(1)


class VitzooGroup(click.Group):
    """The root group: no command ends in a traceback unless ``--debug`` asks for one."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every command's errors meet
            report_error(exc, ctx)
