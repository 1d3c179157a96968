"""The expansion record (``student.meta["fxgrow_expansions"]``) as JSON, for ``fxgrow.save``.

The record maps each widened tensor's name to its axes' ``(axis, index, fraction, consumed)``:
the teacher positions every student position copies, the share it carries and whether the axis
is consumed.  ``fxgrow.transfer_optimizer`` and ``fxgrow.map_tensor`` need it; a student saved
without it would get teacher-shaped optimizer state.  Invariant: ``decode(encode(r))`` equals
``r`` bit for bit (indices as integers, fractions as their float64 values with their dtype)."""

from __future__ import annotations

from typing import Any

import torch

KEY = "fxgrow_expansions"


def encode(record: dict[str, list]) -> dict[str, list]:
    """JSON-able form of an expansion record."""
    out: dict[str, list] = {}
    for name, axes in record.items():
        out[name] = [
            [
                int(axis),
                [int(i) for i in index.tolist()],
                [float(f) for f in fraction.double().tolist()],
                str(fraction.dtype).removeprefix("torch."),
                bool(consumed),
            ]
            for axis, index, fraction, consumed in axes
        ]
    return out


def decode(data: Any) -> dict[str, list]:
    """The expansion record from ``encode``'s output."""
    record: dict[str, list] = {}
    for name, axes in data.items():
        record[name] = [
            (
                axis,
                torch.tensor(index, dtype=torch.long),
                torch.tensor(fraction, dtype=torch.float64).to(getattr(torch, dtype)),
                consumed,
            )
            for axis, index, fraction, dtype, consumed in axes
        ]
    return record
