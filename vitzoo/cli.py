"""The ``vitzoo`` command line: the root group, the built-in commands and the plugins' ones.

Wiring only. Every command lives in a module of :mod:`vitzoo.commands` (one per command group,
each exposing ``COMMANDS``); how errors end a command is :mod:`vitzoo.commands.errors` (plain
lines and exit status 2 for what the user can fix, one line and exit status 1 otherwise,
``--debug`` for the traceback). A plugin adds commands through its ``register_commands`` hook;
one whose hook raises is reported in one line and the CLI keeps working.
"""

from __future__ import annotations

import sys

import click

from vitzoo.commands import (
    build,
    check,
    deploy,
    info,
    inspect,
    predict,
    probe,
    registry,
    train,
    weights,
)
from vitzoo.commands.common import err
from vitzoo.commands.errors import VitzooGroup, show_warnings_plainly
from vitzoo.plugins import PluginSystem, get_plugin_system

#: The modules of the built-in commands (each exposes ``COMMANDS``), in help order.
COMMAND_MODULES = (registry, build, check, train, predict, probe, inspect, info, weights, deploy)
#: Arguments click answers itself, before any command runs.
OWN_OPTIONS = ("-h", "--help", "--version")


@click.group(cls=VitzooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vitzoo")
@click.option(
    "--debug", is_flag=True, help="Show the full traceback of unexpected errors (VITZOO_DEBUG=1)."
)
def cli(debug: bool) -> None:
    """vitzoo: a plugin-based model zoo for Vision Transformers."""


def add_builtin_commands(group: click.Group) -> None:
    """Add every built-in command to ``group`` (again is harmless: a name is added once)."""
    for module in COMMAND_MODULES:
        for command in module.COMMANDS:
            group.add_command(command)


def add_plugin_commands(group: click.Group, system: PluginSystem) -> None:
    """Let each plugin add commands; a plugin that raises is reported, the CLI keeps working."""
    for impl in system.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=group)
        except Exception as exc:  # a broken plugin must never break the CLI
            err.print(
                f"vitzoo: plugin {impl.plugin_name!r} failed to add commands ({type(exc).__name__}: {exc})"
            )


add_builtin_commands(cli)


def main(argv: list[str] | None = None) -> None:
    """The ``vitzoo`` script. Plugins' commands are collected only for a command that is not
    built in, and for the command list, so ``vitzoo --version`` or ``vitzoo build`` never
    run (nor wait for) other plugins' ``register_commands`` hooks."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:  # accepted after the command too: vitzoo build x.yaml --debug
        args.remove("--debug")
        args.insert(0, "--debug")
    rest = args[1:] if args and args[0] == "--debug" else args
    if not rest or rest[0] in ("-h", "--help") or rest[0] not in (*cli.commands, *OWN_OPTIONS):
        add_plugin_commands(cli, get_plugin_system())
    show_warnings_plainly()
    cli.main(args=args, prog_name="vitzoo")


if __name__ == "__main__":
    main()
