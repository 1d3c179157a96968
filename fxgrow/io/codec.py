"""The value codec of saved graphs: Python values as tagged JSON (``{"tuple": [...]}``,
``{"dtype": "float32"}``, ``{"node": "x"}``, ``{"fn": "torch.relu"}``) and objects by the
qualified name that imports back to them.

Invariant: ``_enc`` stores only numbers, strings, torch dtypes/devices/layouts/memory formats,
slices, Ellipsis and containers of them (anything else is a :class:`SaveError`); ``_dec``
rebuilds exactly those, resolving a function only through :mod:`fxgrow.io.trust`'s allowlist,
and raises :class:`LoadError` on any other tag.  ``_import`` is the save side only (the names of
a live model); nothing here imports a name read from a file."""

from __future__ import annotations

import builtins
import importlib
import math
import re
from typing import Any

import torch
import torch.fx
from torch.fx.node import _get_qualified_name

from ..errors import LoadError, SaveError
from .trust import SAFE_BUILTINS, resolve_function

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


# -- values ----------------------------------------------------------------------------------------


def _enc(v: Any, where: str) -> Any:
    if isinstance(v, torch.fx.Node):
        return {"node": v.name}
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, torch.Size):
        return {"size": [_enc(x, where) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [_enc(x, where) for x in v]}
    if isinstance(v, list):
        return [_enc(x, where) for x in v]
    if isinstance(v, dict):
        return {"dict": [[_enc(k, where), _enc(x, where)] for k, x in v.items()]}
    if isinstance(v, slice):
        return {"slice": [_enc(v.start, where), _enc(v.stop, where), _enc(v.step, where)]}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": str(v)}
    if isinstance(v, torch.memory_format):
        return {"memory_format": str(v).removeprefix("torch.")}
    if isinstance(v, torch.layout):
        return {"layout": str(v).removeprefix("torch.")}
    if v is Ellipsis:
        return {"ellipsis": True}
    if isinstance(v, complex):
        return {"complex": [v.real, v.imag]}
    raise SaveError(
        f"{where}: cannot store a value of type {type(v).__name__} ({v!r:.60}); "
        f"fxgrow saves graphs whose constants are numbers, strings, dtypes, devices, "
        f"slices and containers of them. Save student.state_dict() instead"
    )


def _dec(v: Any, env: dict | None, trusted: tuple) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [_dec(x, env, trusted) for x in v]
    if not isinstance(v, dict) or len(v) != 1:
        raise LoadError(f"malformed value in the graph: {v!r:.80}")
    ((tag, x),) = v.items()
    if tag == "node":
        if env is None or x not in env:
            raise LoadError(f"the graph refers to node {x!r} before defining it")
        return env[x]
    if tag == "float":
        if x not in ("inf", "-inf", "nan"):
            raise LoadError(f"malformed float {x!r}")
        return float(x)
    if tag == "size":
        return torch.Size(_dec(x, env, trusted))
    if tag == "tuple":
        return tuple(_dec(y, env, trusted) for y in x)
    if tag == "dict":
        return {_dec(k, env, trusted): _dec(y, env, trusted) for k, y in x}
    if tag == "slice":
        return slice(*(_dec(y, env, trusted) for y in x))
    if tag in ("dtype", "memory_format", "layout"):
        kind = {"dtype": torch.dtype, "memory_format": torch.memory_format, "layout": torch.layout}[
            tag
        ]
        found = getattr(torch, str(x), None) if _IDENT.match(str(x)) else None
        if not isinstance(found, kind):
            raise LoadError(f"unknown torch {tag} {x!r}")
        return found
    if tag == "device":
        try:
            return torch.device(str(x))
        except (RuntimeError, ValueError) as e:
            raise LoadError(f"malformed device {x!r}") from e
    if tag == "ellipsis":
        return Ellipsis
    if tag == "complex":
        return complex(float(x[0]), float(x[1]))
    if tag == "fn":
        return resolve_function(str(x), trusted)
    raise LoadError(f"unknown value tag {tag!r} in the graph")


# -- names -----------------------------------------------------------------------------------------


def _qualname(obj: Any) -> str:
    """A name that imports back to ``obj``."""
    candidates = []
    try:
        candidates.append(_get_qualified_name(obj))
    except Exception:
        pass
    mod, name = getattr(obj, "__module__", None), getattr(obj, "__name__", None)
    if mod and name:
        candidates.append(f"{mod}.{name}")
    qual = getattr(obj, "__qualname__", None)
    if mod and qual and "<" not in qual:
        candidates.append(f"{mod}.{qual}")
    for c in candidates:
        if c in SAFE_BUILTINS or c.startswith("builtins."):
            c = c.removeprefix("builtins.")
            if getattr(builtins, c, None) is obj:
                return c
            continue
        try:
            if _import(c) is obj:
                return c
        except Exception:
            continue
    raise SaveError(
        f"cannot name {obj!r} so that it imports back; fxgrow saves graphs that call "
        f"importable functions and classes only. Save student.state_dict() instead"
    )


def _import(name: str) -> Any:
    """The object a qualified name imports to (save side: the names of a live model)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for p in parts[k:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(name)
