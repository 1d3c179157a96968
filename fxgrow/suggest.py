"""'Did you mean ...?': the known names closest to one the user mistyped."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(
    name: str, known: Iterable[str], *, quote: bool = True, otherwise: str = ""
) -> str:
    """``"; did you mean 'a', 'b'?"`` with the (at most three) names of ``known`` closest to
    ``name`` (``difflib``'s ratio >= 0.6), ``repr``-quoted unless ``quote`` is False (a name to
    type at a shell); ``otherwise`` when none is close."""
    close = difflib.get_close_matches(name, [k for k in known if k], n=3)
    if not close:
        return otherwise
    return "; did you mean " + ", ".join(repr(c) if quote else c for c in close) + "?"
