"""How a command ends: plain lines on stderr, one exit status rule for every command.

The rule (the README's "Exit status" states it):

* 0 -- done;
* 1 -- a failure that is not the input's: checks that fail (``vitzoo check``, as pytest),
  nothing matching (``vitzoo list PATTERN``, as grep), an internal error (one line and "run
  with --debug for the traceback"; ``--debug`` or ``VITZOO_DEBUG=1`` lets it through);
* 2 -- bad input, nothing done: the problem in plain lines on stderr (``file:line:col  path:
  message`` for specs), never a traceback. Every :class:`~vitzoo.errors.InputError` (specs,
  checkpoints, weights, data, sizes), an unknown plugin or name, a model that cannot be
  exported, a runtime that is not installed; click's own usage errors (``Error: ...``) too;
* 3 -- partial results: some inputs were unreadable and skipped (``predict``, ``evaluate``);
  the results of the rest are printed, each skipped input and a count are on stderr;
* 130 -- interrupted (Ctrl-C), after saving what can be resumed.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from vitzoo.commands.common import err
from vitzoo.errors import (
    DistributedError,
    ExportError,
    InputError,
    PluginLoadError,
    RuntimeUnavailable,
    VitzooWarning,
)
from vitzoo.terminal import make_console

EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130

#: Errors that mean "cannot do this with this input here" (exit 2) beside InputError: the
#: command's own argument checks raise ValueError / FileNotFoundError / FileExistsError.
USER_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    ExportError,
    RuntimeUnavailable,
    FileNotFoundError,
    FileExistsError,
    ValueError,
)


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
    data, input sizes ...), whose messages say what to change, plus an unknown plugin or name,
    a model that cannot be exported and a runtime that is not installed.
    """
    if isinstance(exc, InputError | ExportError | RuntimeUnavailable):
        fail_with_spec_error(exc)
    if isinstance(exc, DistributedError):  # not bad input, but a plain sentence, not a bug
        err.print(f"vitzoo: {exc}", markup=False, highlight=False)
        sys.exit(1)
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


@contextmanager
def user_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Inside a command: the errors a user can fix (:data:`USER_ERRORS` and ``extra``) end it
    with plain lines on stderr and exit status 2, also when the command is invoked on its own
    (tests, a plugin's group) rather than through :class:`VitzooGroup`. OSError is not among
    them: a full disk is not bad input."""
    try:
        yield
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except (*USER_ERRORS, *extra) as exc:
        if isinstance(exc, InputError | ExportError | RuntimeUnavailable):
            fail_with_spec_error(exc)
        fail_plainly(str(exc))


def say_partial(
    skipped: int, total: int, what: str = "inputs", listed: str = "listed above"
) -> NoReturn:
    """One stderr line saying the results are partial, then exit status 3."""
    err.print(
        f"warning: {skipped} of {total} {what} could not be read ({listed}); the results "
        f"cover the other {total - skipped}",
        markup=False,
        highlight=False,
    )
    sys.exit(EXIT_PARTIAL)


def show_warnings_plainly() -> None:
    """vitzoo's own warnings (a head re-initialised, bf16 emulated here) as one ``warning:``
    line on stderr. Python's format would name a line inside click (the first caller outside
    vitzoo) and repeat that source line; other libraries' warnings keep Python's format."""
    default = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
        if issubclass(category, VitzooWarning):
            err.print(f"warning: {message}", markup=False, highlight=False)
        else:
            default(message, category, filename, lineno, *rest)

    warnings.showwarning = show


class VitzooGroup(click.Group):
    """The root group: no command ends in a traceback unless ``--debug`` asks for one."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every command's errors meet
            report_error(exc, ctx)


def refuse_existing(path: Path, overwrite: bool, *, resumable: bool = False) -> None:
    """An output file that exists is kept unless ``--overwrite`` says otherwise (``resumable``
    commands name ``--resume`` too): one plain line, exit status 2."""
    if path.exists() and not overwrite:
        options = "--resume to continue it or --overwrite" if resumable else "--overwrite"
        fail_plainly(f"{path} exists; pass {options} to replace it")
