"""Every built-in CLI command, one module per command group.

Each module exposes ``COMMANDS``, a list of click commands; :mod:`vitzoo.cli` adds them to the
root group. Shared options and consoles are in :mod:`~vitzoo.commands.common`, how a command
ends on an error in :mod:`~vitzoo.commands.errors`.
"""
