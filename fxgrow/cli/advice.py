"""Library advice rewritten for the command line: the flag, not the Python keyword.

Invariant: every message printed by ``fxgrow`` (the CLI) passes through :func:`for_cli`, which
replaces each Python-API hint the library's errors give (``pass approximate=True``,
``kind='residual'``, ``leaf_modules=[...]``, ``verify=False``, ``trusted=(...)``, "Pass inputs
of the shape ...") with the command-line option that does the same.  The library keeps its
Python wording; the table below is the single place the two vocabularies meet, and
``tests/test_cli_mistakes.py`` checks that no Python keyword survives in CLI output."""

from __future__ import annotations

import re

_RULES: list[tuple[str, str]] = [
    (
        r"\(or pass approximate=True to accept a measured approximation\)",
        "(or pass --approximate to accept a measured approximation)",
    ),
    (r"(?:pass )?approximate=True", "--approximate"),
    (r"[Uu]se kind=['\"]residual['\"]", "Use --kind residual"),
    (r"kind=['\"](\w+)['\"]", r"--kind \1"),
    (r"pass layer=['\"](\w+)['\"] or layer=['\"](\w+)['\"]", r"pass --layer \1 or --layer \2"),
    (
        r"Pass leaf_modules=\[\.\.\.\] naming that module \(its type or qualified name\)",
        "Pass --leaf MODULE naming that module (its qualified name)",
    ),
    (r"or use fxgrow's torch\.export front end", "or use --frontend export"),
    (
        r"\(?pass verify=False to get the student anyway\)?",
        "(--no-verify writes the student anyway)",
    ),
    (
        r"pass trusted=\((['\"])([^'\"]+)\1,\) to fxgrow\.load \(command line: --trust [^)]+\)",
        r"pass --trust \2",
    ),
    (r"outputs=['\"]grow['\"]", "--outputs grow"),
    (r"split=['\"](\w+)['\"]", r"--split \1"),
    (r"frontend=['\"](\w+)['\"]", r"--frontend \1"),
    (
        r"Pass inputs of the (number, )?shape, dtype and device the model expects",
        "Give inputs the model accepts: --input-shape N,C,H,W (repeat for several inputs) or "
        "--input-ids B,T, and --dtype",
    ),
    (
        r"Pass inputs of the shape, dtype and device the model expects",
        "Give inputs the model accepts: --input-shape / --input-ids / --dtype",
    ),
    (
        r"Save student\.state_dict\(\) instead",
        "save the weights only (from Python: student.state_dict())",
    ),
]
_COMPILED = [(re.compile(p), r) for p, r in _RULES]

PYTHON_HINTS = re.compile(
    r"\b(approximate|kind|leaf_modules|layer|verify|trusted|outputs|split|"
    r"frontend|untie)="
)
"""A Python keyword argument in a message: what the CLI must never show."""


def for_cli(message: str) -> str:
    """``message`` with Python-API advice replaced by the equivalent command-line options."""
    for pattern, replacement in _COMPILED:
        message = pattern.sub(replacement, message)
    return message
