"""Pieces several commands share: the ``--set KEY=VALUE`` option, the consoles, number formats.

One definition each, so ``vitzoo build``, ``train`` and ``convert`` parse ``--set`` alike and
report a malformed one alike (a usage error, exit status 2), and every command prints through
consoles that never wrap when piped (:func:`vitzoo.terminal.make_console`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click
from rich.console import Console

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
