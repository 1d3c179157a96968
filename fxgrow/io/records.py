"""A module as a record of the saved file: its class by qualified name, the constructor
arguments read back from its attributes, and its plain attributes (functions by name).

Invariant: only plain values (numbers, strings, dtypes, devices and containers of them) are
recorded; tensors and submodules are not (they are stored as tensors and records of their own)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ..errors import SaveError
from .codec import _enc, _qualname

_SIMPLE = (bool, int, float, str, type(None))


def _plain(v: Any) -> bool:
    if isinstance(v, (*_SIMPLE, torch.dtype, torch.device)):
        return True
    if isinstance(v, (tuple, list)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def _ctor_kwargs(m: torch.nn.Module) -> dict:
    """Constructor arguments read back from a module's attributes of the same names."""
    try:
        sig = inspect.signature(type(m).__init__)
    except (TypeError, ValueError):
        return {}
    out = {}
    for name, p in list(sig.parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in ("device", "dtype"):
            continue
        if name in m._parameters or name in m._buffers:
            value = getattr(m, name, None)
            if p.default is True or p.default is False or name == "bias":
                out[name] = value is not None
            continue
        if name in m._modules:
            continue
        if not hasattr(m, name):
            continue
        value = getattr(m, name)
        if isinstance(value, torch.Tensor):
            continue
        if _plain(value):
            out[name] = value
    return _special_kwargs(m, out)


def _special_kwargs(m: torch.nn.Module, out: dict) -> dict:
    if isinstance(m, torch.nn.MultiheadAttention):
        out["bias"] = m.in_proj_bias is not None
        out["add_bias_kv"] = m.bias_k is not None
    return out


def _attrs(m: torch.nn.Module) -> dict:
    """Plain attributes (numbers, strings, tuples ...) and functions by name."""
    out = {}
    for k, v in vars(m).items():
        if k.startswith("_") or k == "training":
            continue
        if _plain(v):
            out[k] = _enc(v, f"attribute {k}")
        elif (
            callable(v)
            and not isinstance(v, (torch.nn.Module, torch.Tensor, type))
            and (inspect.isfunction(v) or inspect.isbuiltin(v))
        ):
            try:
                out[k] = {"fn": _qualname(v)}
            except SaveError:
                pass
    return out


def _module_record(path: str, m: torch.nn.Module, container: bool) -> dict:
    rec: dict = {"path": path, "training": m.training}
    if container:
        rec["class"] = None
        return rec
    rec["class"] = _qualname(type(m))
    rec["kwargs"] = {k: _enc(v, f"module {path}") for k, v in _ctor_kwargs(m).items()}
    rec["attrs"] = _attrs(m)
    return rec
