"""The verifier's decision as a value: what ``verify`` would decide, without raising, for callers
that report a failure rather than stop at it (the command line's ``--no-verify``).

Invariant: ``ok`` is exactly what :func:`fxgrow.verify.verify` decides (the dtype's floor, then
the calibration against a more precise reference); a student inexact by design (noise,
approximate widths) is measured and compared with the floor, never calibrated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import PreservationError
from .compare import Comparison, _as_tuple, compare, tolerance, verify


@dataclass(frozen=True)
class Verdict:
    """``result``: the comparison (with the reference figures when calibration decided);
    ``tolerance``: the floor of the model's dtype; ``error``: why not ``ok`` (None when ok
    or when the student is inexact by design)."""

    result: Comparison
    tolerance: float
    ok: bool
    error: PreservationError | None = None


def judge(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    example_inputs: Any,
    *,
    exact: bool = True,
) -> Verdict:
    """Compare ``student`` with ``teacher`` on ``example_inputs`` and decide.  ``exact=False``:
    the student is not exact by design (noise, approximate widths), only measured."""
    inputs = _as_tuple(example_inputs)
    result = compare(teacher, student, inputs)
    floor = tolerance(inputs, teacher)
    if not exact or result.max_rel <= floor:
        return Verdict(result, floor, result.max_rel <= floor)
    try:
        return Verdict(verify(teacher, student, inputs), floor, True)
    except PreservationError as e:
        return Verdict(result, floor, False, e)
