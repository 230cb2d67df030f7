"""Pieces several commands share: the ``--set KEY=VALUE`` option, the consoles, number formats.

One definition each, so ``vitzoo build``, ``train`` and ``convert`` parse ``--set`` alike and
report a malformed one alike (a usage error, exit status 2), and every command prints through
consoles that never wrap when piped (:func:`vitzoo.terminal.make_console`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from vitzoo.terminal import make_console

#: Standard output and standard error of the built-in commands. Rich looks up ``sys.stdout`` /
#: ``sys.stderr`` at each print, so click's test runner captures them too.
out: Console = make_console()
err: Console = make_console(stderr=True)


def set_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The repeatable ``--set KEY=VALUE`` option; its values arrive as the ``sets`` tuple."""
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=help)


def parse_sets(values: Iterable[str]) -> dict[str, Any]:
    """``--set model.dim=384`` -> {"model.dim": 384}; a malformed one is a usage error.

    The parsing itself is :func:`vitzoo.spec.parse_assignments`, which the Python API shares.
    """
    from vitzoo.spec import OverrideSyntaxError, parse_assignments

    try:
        return parse_assignments(values)
    except OverrideSyntaxError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None


def human_count(n: int) -> str:
    """``86.6M``: parameter counts as people quote them (list and build tables)."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def image_size(value: str | None, flag: str = "--img-size") -> int | list[int] | None:
    """``--img-size 224`` -> 224, ``--img-size 384,320`` (or ``384x320``) -> [384, 320]."""
    if value is None:
        return None
    try:
        sizes = [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise click.BadParameter(f"expected N or H,W (positive), got {value!r}", param_hint=flag)
    return sizes[0] if len(sizes) == 1 else sizes


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback drawing a rich bar on stderr when it is a terminal (and
    nothing when piped or in CI, where a bar is noise)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if not enabled or not err.is_terminal:
        yield lambda done, total: None
        return
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def inference_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--runtime`` and ``--precision``, shared by evaluate and predict."""
    command = click.option(
        "--precision",
        type=click.Choice(["fp32", "bf16"]),
        default="fp32",
        show_default=True,
        help="bf16: weights cast once to bfloat16 (torch runtime).",
    )(command)
    return click.option(
        "--runtime",
        type=click.Choice(["torch", "onnxruntime"]),
        default="torch",
        show_default=True,
        help="onnxruntime: export in memory and run in ONNX Runtime (a .onnx file always is).",
    )(command)


@contextmanager
def plain_warnings(console: Console) -> Iterator[None]:
    """Show library warnings (a class list that disagrees with the outputs, skipped files)
    as one ``warning:`` line each on stderr, without Python's file:line prefix."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for item in caught:
                # Libraries' deprecation notices are for their developers, and Python hides them
                # by default; "always" above is only there so repeated vitzoo warnings show.
                if issubclass(item.category, DEPRECATIONS):
                    continue
                console.print(f"[yellow]warning:[/] {escape(str(item.message))}", highlight=False)


DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
