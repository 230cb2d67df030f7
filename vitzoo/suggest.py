""" "Did you mean ...?" for mistyped names: one small helper every error message can reuse."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The registered name / field closest to ``word`` (difflib ratio >= ``cutoff``), or None."""
    if not isinstance(word, str):
        return None
    pool = [c for c in choices if isinstance(c, str)]
    by_case = {c.lower(): c for c in pool}
    if word.lower() in by_case and by_case[word.lower()] != word:
        return by_case[word.lower()]
    found = difflib.get_close_matches(word, pool, n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``" (did you mean 'mhsa'?)"`` when a close match exists, else ``""`` (append to a name)."""
    match = closest(word, choices, cutoff=cutoff)
    return f" (did you mean {match!r}?)" if match is not None else ""
