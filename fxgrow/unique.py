"""Fresh names: the first free name of the form ``{base}{sep}{k}``."""

from __future__ import annotations

from collections.abc import Callable, Container


def unique_name(
    base: str,
    taken: Container[str] | Callable[[str], bool],
    *,
    start: int = 0,
    sep: str = "",
    bare: bool = False,
) -> str:
    """``base`` itself if ``bare`` and it is free, else ``f"{base}{sep}{k}"`` for the first
    ``k >= start`` that is free.  ``taken``: the names in use, or a test for one."""
    used = taken if callable(taken) else taken.__contains__
    if bare and not used(base):
        return base
    k = start
    while used(f"{base}{sep}{k}"):
        k += 1
    return f"{base}{sep}{k}"
