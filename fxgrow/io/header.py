"""What a saved file declares, read without building its model: fxgrow's metadata (format,
version, class, recorded inputs) and random example inputs of the recorded shapes.

Invariant: the metadata is untrusted JSON: a wrong format, a newer version, an unknown dtype, an
impossible shape or an input over ``MAX_INPUT_ELEMENTS`` is a :class:`LoadError` before anything
is allocated."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from ..errors import InputError, LoadError

FORMAT = "fxgrow.graphmodule"
VERSION = 1
MAX_INPUT_ELEMENTS = 1 << 28
"""Recorded example inputs larger than this (elements) are refused rather than allocated."""
_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}


def info(path: str | os.PathLike) -> dict:
    """The metadata fxgrow stored in a saved file (format, versions, class name, inputs...)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise LoadError(
            f"{path.name} is not a safetensors file (damaged or truncated?): {_short(e)}"
        ) from e
    raw = meta.get("fxgrow")
    if raw is None:
        raise LoadError(
            f"{path.name} is a safetensors file without fxgrow's graph (plain "
            f"weights?): load it with safetensors.torch.load_file and "
            f"model.load_state_dict"
        )
    try:
        desc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LoadError(f"{path.name}: fxgrow metadata is not valid JSON ({e})") from e
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise LoadError(
            f"{path.name}: unknown format "
            f"{desc.get('format') if isinstance(desc, dict) else desc!r:.60}"
        )
    if not isinstance(desc.get("version", 0), int) or desc.get("version", 0) > VERSION:
        raise LoadError(
            f"{path.name} was written by a newer fxgrow (format version "
            f"{desc.get('version')!r:.20}); upgrade fxgrow"
        )
    return desc


def _short(e: object, n: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= n else text[: n - 1] + "…"


def input_spec(path: str | os.PathLike) -> list[tuple[tuple[int, ...], torch.dtype, int, int]]:
    """The recorded example inputs as (shape, dtype, low, high), checked: known dtypes,
    non-negative sizes, at most ``MAX_INPUT_ELEMENTS`` elements each."""
    spec = info(path).get("inputs") or []
    out = []
    try:
        for d in spec:
            dtype = _DTYPES.get(str(d["dtype"]))
            if dtype is None:
                raise LoadError(
                    f"{Path(path).name} records an input of unknown dtype {d['dtype']!r:.40}"
                )
            shape = tuple(int(n) for n in d["shape"])
            if any(n < 0 for n in shape) or len(shape) > 16:
                raise LoadError(f"{Path(path).name} records an impossible input shape {shape}")
            if math.prod(shape) > MAX_INPUT_ELEMENTS:
                raise LoadError(
                    f"{Path(path).name} records an input of shape {shape} "
                    f"({math.prod(shape):,} elements, over fxgrow's limit of "
                    f"{MAX_INPUT_ELEMENTS:,}); give the input shape yourself "
                    f"(--input-shape / example inputs)"
                )
            low, high = int(d.get("low", 0)), int(d.get("high", 2))
            if not dtype.is_floating_point and low >= high:
                raise LoadError(f"{Path(path).name} records an empty id range [{low}, {high})")
            out.append((shape, dtype, low, high))
    except (KeyError, TypeError, ValueError) as e:
        raise LoadError(f"{Path(path).name}: malformed input record ({_short(e)})") from e
    return out


def example_inputs(path: str | os.PathLike, seed: int = 0) -> tuple | None:
    """Random inputs of the shapes and dtypes recorded by ``save(..., example_inputs=...)``,
    or None if none were recorded."""
    spec = input_spec(path)
    if not spec:
        return None
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape, dtype, low, high in spec:
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=g, dtype=dtype))
        else:
            out.append(torch.randint(low, high, shape, generator=g, dtype=dtype))
    return tuple(out)
