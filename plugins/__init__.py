"""vitzoo's built-in plugins (installed as ``vitzoo_plugins``).

Each module registers one family of variants through the ``vitzoo`` entry-point group, exactly as a
third-party package would; the core never imports them.
"""
