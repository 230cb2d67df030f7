""" "Did you mean ...?" for mistyped names, and declared vocabularies checked with it."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from typing import Any

from vitzoo.errors import RegistrationError


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


def check_declared_words(
    words: Any, known: Collection[str], *, noun: str, where: str, reference: str
) -> frozenset[str]:
    """Validate a declaration of words (one word or an iterable) against a declared vocabulary.

    Tags and capabilities are both closed vocabularies: a typo in a plugin's ``tags=`` or
    ``needs=`` would otherwise be a silent no-op. An unknown word raises a RegistrationError
    naming the registration (``where``), the word, a did-you-mean and the known words.
    Enum members count by their ``value``.
    """
    if words is None:
        return frozenset()
    if isinstance(words, str):
        words = (words,)
    out = set()
    for word in words:
        text = getattr(word, "value", word)
        if not isinstance(text, str) or text not in known:
            hint = did_you_mean(text, known) if isinstance(text, str) else ""
            raise RegistrationError(
                f"{where}: unknown {noun} {text!r}{hint}; known {noun}s: "
                f"{', '.join(sorted(known))} ({reference})"
            )
        out.add(text)
    return frozenset(out)
