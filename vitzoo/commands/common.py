"""Click pieces several commands share: the ``--set KEY=VALUE`` option and plain error exits.

One definition each, so ``vitzoo build``, ``train`` and ``convert`` parse ``--set`` alike and
report a malformed one alike (a usage error, exit status 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import click

from vitzoo.terminal import make_console


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


def fail_plainly(message: str) -> NoReturn:
    """One ``error: ...`` line on stderr (white space folded) and exit status 2."""
    make_console(stderr=True).print(
        f"error: {' '.join(message.split())}", markup=False, highlight=False
    )
    sys.exit(2)
