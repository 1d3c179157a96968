"""The growth record (:class:`fxgrow.growth.GrowthRecord`) as JSON, for ``fxgrow.save``.

Every field is written except ``weights`` (a fact of how a file was loaded, not of the
model).  The expansion record maps each widened tensor's name to its axes as ``[axis, index,
fraction, dtype, consumed]``: ``transfer_optimizer`` and ``map_tensor`` need it, and a student
saved without it would get teacher-shaped optimizer state.

Invariant: ``decode(encode(r)) == r`` field by field, tensors bit for bit (indices as
integers, fractions as their float64 values with their dtype).  ``decode`` reads untrusted
JSON: a value of the wrong type is a :class:`LoadError`, never a wrong record.  Files written
before the record existed (keys ``fxgrow_frontend``, ``fxgrow_output_positions``,
``fxgrow_expansions``) decode too."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import torch

from ..errors import LoadError, SaveError
from ..growth import AxisExpansion, Expansions, GrowthRecord

_DTYPES = ("float16", "bfloat16", "float32", "float64")
_LEGACY = {  # keys of files saved before the record: field -> key
    "frontend": "fxgrow_frontend",
    "output_positions": "fxgrow_output_positions",
    "expansions": "fxgrow_expansions",
    "renumbered": "renumbered",
}


def encode_expansions(expansions: Expansions) -> dict[str, list]:
    """JSON-able form of an expansion record."""
    return {
        name: [
            [
                int(e.axis),
                [int(i) for i in e.source.tolist()],
                [float(f) for f in e.fraction.double().tolist()],
                str(e.fraction.dtype).removeprefix("torch."),
                bool(e.consumed),
            ]
            for e in map(AxisExpansion._make, axes)
        ]
        for name, axes in expansions.items()
    }


def decode_expansions(data: Any) -> dict[str, tuple[AxisExpansion, ...]]:
    """The expansion record from ``encode_expansions``'s output, checked: floating dtypes
    only, integer indices, one share per index."""
    record: dict[str, tuple[AxisExpansion, ...]] = {}
    for name, axes in _dict(data, "expansions").items():
        entries = []
        for axis, index, fraction, dtype, consumed in axes:
            if (
                dtype not in _DTYPES
                or not _int(axis)
                or not all(_int(i) for i in index)
                or len(fraction) != len(index)
                or not all(_number(f) for f in fraction)
                or not isinstance(consumed, bool)
            ):
                raise ValueError(f"malformed expansion of {name!r} (dtype {dtype!r:.20})")
            entries.append(
                AxisExpansion(
                    axis,
                    torch.tensor(index, dtype=torch.long),
                    torch.tensor(fraction, dtype=torch.float64).to(getattr(torch, dtype)),
                    consumed,
                )
            )
        record[str(name)] = tuple(entries)
    return record


def encode(record: GrowthRecord) -> dict[str, Any]:
    """JSON-able form of a growth record (``weights`` left out)."""
    out: dict[str, Any] = {
        "frontend": record.frontend,
        "captured_training": record.captured_training,
        "expansions": encode_expansions(record.expansions),
        "output_positions": None
        if record.output_positions is None
        else [
            [None if p is None else [int(i) for i in p.tolist()] for p in per]
            for per in record.output_positions
        ],
        "layer_sources": None if record.layer_sources is None else list(record.layer_sources),
        "renumbered": record.renumbered,
        "inexact": record.inexact,
        "error": _comparison(record.error),
        "whole": _comparison(record.whole),
        "fresh_error": record.fresh_error,
        "gradmax": record.gradmax,
        "trainable": record.trainable,
        "config_fields": None if record.config_fields is None else dict(record.config_fields),
        "group_widths": None if record.group_widths is None else dict(record.group_widths),
    }
    try:
        json.dumps(out)
    except (TypeError, ValueError) as e:
        raise SaveError(f"the growth record cannot be written as JSON ({e})") from e
    return out


def decode(data: Any, where: str, legacy: bool = False) -> GrowthRecord:
    """The record from ``encode``'s output (``legacy``: from the keys of older files);
    ``where`` names the file in errors."""
    try:
        data = _dict(data, "growth record")
        if legacy:
            data = {f: data[k] for f, k in _LEGACY.items() if data.get(k) is not None}
        return _decode(data)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise LoadError(
            f"{where}: the stored growth record is malformed ({e}); it was not written "
            f"by fxgrow.save or is damaged"
        ) from e


def _decode(data: dict) -> GrowthRecord:
    from ..verify.compare import Comparison
    from ..within.detections import WholeComparison

    positions = data.get("output_positions")
    sources = data.get("layer_sources")
    fields = data.get("config_fields")
    gradmax = data.get("gradmax")
    fresh = data.get("fresh_error")
    widths = data.get("group_widths")
    return GrowthRecord(
        frontend=_optional(data.get("frontend"), str, "frontend"),
        captured_training=_optional(data.get("captured_training"), bool, "captured_training"),
        expansions=decode_expansions(data.get("expansions") or {}),
        output_positions=None
        if positions is None
        else tuple(
            tuple(None if p is None else _long(p, "output_positions") for p in per)
            for per in positions
        ),
        layer_sources=None if sources is None else tuple(_ints(sources, "layer_sources")),
        renumbered=_flag(data.get("renumbered", False), "renumbered"),
        inexact=_flag(data.get("inexact", False), "inexact"),
        error=_from_dict(Comparison, data.get("error")),
        whole=_from_dict(WholeComparison, data.get("whole")),
        fresh_error=None if fresh is None else float(_optional(fresh, (int, float), "fresh")),
        gradmax=None if gradmax is None else float(_optional(gradmax, (int, float), "gradmax")),
        trainable=_optional(data.get("trainable"), str, "trainable"),
        config_fields=None if fields is None else dict(_dict(fields, "config_fields")),
        group_widths=None if widths is None else _widths(widths),
    )


# -- helpers ---------------------------------------------------------------------------------------


def _comparison(c: Any) -> dict[str, Any] | None:
    return None if c is None else dataclasses.asdict(c)


def _from_dict(cls: type, d: Any) -> Any:
    """A frozen comparison dataclass from its fields, each of its declared simple type."""
    if d is None:
        return None
    d = _dict(d, cls.__name__)
    names = {f.name for f in dataclasses.fields(cls)}
    if not set(d) <= names:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(set(d) - names)}")
    hints = typing.get_type_hints(cls)
    for k, v in d.items():
        kinds = set(typing.get_args(hints[k])) or {hints[k]}  # X | None -> {X, NoneType}
        if v is None and type(None) in kinds:
            continue
        want: tuple[type, ...] = (
            (str,) if str in kinds else (int,) if int in kinds else (int, float)
        )
        if not isinstance(v, want) or isinstance(v, bool):
            raise ValueError(f"{cls.__name__}.{k} is {v!r:.40}")
    return cls(**d)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flag(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{what} is {v!r:.40}, not true or false")
    return v


def _dict(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"{what} is a {type(v).__name__}, not an object")
    return v


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(v: Any, what: str) -> list[int]:
    if not isinstance(v, list) or not all(_int(i) for i in v):
        raise ValueError(f"{what} is not a list of integers")
    return v


def _long(v: Any, what: str) -> torch.Tensor:
    return torch.tensor(_ints(v, what), dtype=torch.long)


def _widths(v: Any) -> dict[str, int]:
    d = _dict(v, "group_widths")
    if not all(_int(w) and w > 0 for w in d.values()):
        raise ValueError("group_widths holds a width that is not a positive integer")
    return {str(k): w for k, w in d.items()}


def _optional(v: Any, types: type | tuple[type, ...], what: str) -> Any:
    allowed = types if isinstance(types, tuple) else (types,)
    if v is not None and (
        not isinstance(v, allowed) or isinstance(v, bool) and bool not in allowed
    ):
        raise ValueError(f"{what} is {v!r:.40}")
    return v
