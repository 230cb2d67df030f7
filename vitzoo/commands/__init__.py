"""Built-in CLI sub-commands that live outside ``vitzoo.cli`` (training, inspection).

Each module exposes ``COMMANDS``, a list of click commands; :mod:`vitzoo.cli` adds them.
"""
