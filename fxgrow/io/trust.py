"""What a saved file may name: the allowlist ``fxgrow.load`` resolves graph targets against.

Invariant: a name read from a file becomes a Python object only if it is

* a function fxgrow has an op rule for (``fxgrow.analysis.rules``: the ops whose channel maths
  fxgrow knows), or one of the ``operator`` / ``math`` functions and the few builtins below;
* an ATen operator (``torch.ops.aten.NAME.OVERLOAD``), or a public function of ``torch``,
  ``torch.nn.functional``, ``torch.fft``, ``torch.linalg``, ``torch.special`` that *is* an ATen
  operator (a C builtin whose name has an ATen schema) or one of ``torch.nn.functional``'s /
  ``torch.functional``'s Python functions -- pure tensor maths; operators that take a file name
  (``aten::save``, ``aten::from_file``) are never allowed;
* a ``torch.nn.Module`` subclass defined in torch.nn, torchvision, timm, transformers or fxgrow;
* or a function/class under a name the user trusts explicitly (``trusted=``).

Attribute access never touches a private name: dotted names are walked with public parts only
(submodules of trusted packages are imported, not read as attributes); method names and
attribute names must be public or one of Tensor's arithmetic dunders.  Everything else is a
:class:`~fxgrow.errors.LoadError` naming the target and how to trust it.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import inspect
import math
import operator
import re
import sys
from collections.abc import Iterable
from typing import Any

import torch

from ..errors import LoadError
from .allowlist import (
    FILE_ARGUMENTS,
    KNOWN_CLASSES,
    MODULE_PACKAGES,
    PURE_OPERATOR,
    SAFE_BUILTINS,
    TENSOR_DUNDERS,
)

_TORCH_NAMESPACES = frozenset(
    {  # where public torch functions are looked up by name
        "torch",
        "torch.nn.functional",
        "torch.functional",
        "torch.fft",
        "torch.linalg",
        "torch.special",
        "torch._C._nn",
        "torch._C._fft",
        "torch._C._linalg",
        "torch._C._special",
    }
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PART = re.compile(r"^[A-Za-z0-9_]+$")


def how_to_trust(name: str) -> str:
    """The hint appended to a refusal: how to trust ``name`` from Python and from the CLI."""
    return (
        f"if you trust the file's source, pass trusted=({name!r},) to fxgrow.load "
        f"(command line: --trust {name})"
    )


@functools.cache
def _aten_schemas() -> dict[str, bool]:
    """ATen operator name -> whether every overload is free of file arguments."""
    out: dict[str, bool] = {}
    for s in torch._C._jit_get_all_schemas():
        ns, _, name = s.name.partition("::")
        if ns != "aten":
            continue
        clean = not any(a.name in FILE_ARGUMENTS and "str" in str(a.type) for a in s.arguments)
        out[name] = out.get(name, True) and clean
    return out


def is_aten_op(name: str) -> bool:
    """``name`` is an ATen operator none of whose overloads takes a file name."""
    return _aten_schemas().get(name, False)


def _ruled(name: str = "") -> dict[str, Any]:
    """Qualified name -> function, for every function fxgrow has a rule for (the rules for
    timm's and torchvision's own functions too when ``name`` is one of theirs)."""
    from .. import analysis  # noqa: F401  (registers every rule)
    from ..analysis.rules.registry import DEFERRED, _loaded, load_deferred

    top = name.split(".")[0]
    if top in DEFERRED and top not in sys.modules:
        try:
            importlib.import_module(top)
        except ImportError:
            pass
    load_deferred()
    return _ruled_now(frozenset(_loaded))


@functools.cache
def _ruled_now(loaded: frozenset[str]) -> dict[str, Any]:
    from ..analysis.rules.registry import FUNCTIONS

    out: dict[str, Any] = {}
    for fn in list(FUNCTIONS):
        if isinstance(fn, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            continue
        for name in _names_of(fn):
            out.setdefault(name, fn)
    for name in PURE_OPERATOR:
        out[f"operator.{name}"] = out[f"_operator.{name}"] = getattr(operator, name)
    for name in dir(math):
        if not name.startswith("_") and callable(getattr(math, name)):
            out[f"math.{name}"] = getattr(math, name)
    for name in SAFE_BUILTINS:
        out[name] = out[f"builtins.{name}"] = getattr(builtins, name)
    out["torch._assert"] = torch._assert  # what fx traces `assert` into: raises, nothing more
    return out


def _names_of(fn: Any) -> list[str]:
    names = []
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if mod and qual:
        names.append(f"{mod}.{qual}")
    from torch.fx.node import _get_qualified_name

    try:
        names.append(_get_qualified_name(fn))
    except (AttributeError, RuntimeError, TypeError):
        pass
    return names


def _aten(name: str) -> Any:
    parts = name.split(".")[3:]  # torch.ops.aten.OP[.OVERLOAD]
    if not 1 <= len(parts) <= 2 or not all(_IDENT.match(p) for p in parts):
        raise LoadError(f"malformed ATen operator name {name!r}")
    if not is_aten_op(parts[0]):
        raise LoadError(
            f"the graph calls {name}, which fxgrow does not load: no such ATen "
            f"operator, or one that reads or writes files"
        )
    packet = getattr(torch.ops.aten, parts[0])
    if len(parts) == 1:
        return packet
    if parts[1] not in packet.overloads():
        raise LoadError(
            f"the graph calls {name}: ATen operator {parts[0]} has no overload {parts[1]!r}"
        )
    return getattr(packet, parts[1])


def _torch_function(name: str) -> Any | None:
    prefix, _, fn = name.rpartition(".")
    if prefix not in _TORCH_NAMESPACES or fn.startswith("_") or not _IDENT.match(fn):
        return None
    module: Any = torch
    for part in prefix.split(".")[1:]:
        module = getattr(module, part)
    obj = getattr(module, fn, None)
    if obj is None:
        return None
    if inspect.isbuiltin(obj) and is_aten_op(getattr(obj, "__name__", "")):
        return obj
    if inspect.isfunction(obj) and obj.__module__ in ("torch.nn.functional", "torch.functional"):
        return obj
    return None


def _user_trusted(name: str, trusted: Iterable[str]) -> bool:
    return any(name == t or name.startswith(t + ".") for t in trusted)


def _import_public(name: str, packages: tuple[str, ...]) -> Any:
    """``name`` imported: the longest importable module prefix (inside ``packages``), then
    public attributes only."""
    parts = name.split(".")
    if not all(_IDENT.match(p) for p in parts) or any(p.startswith("__") for p in parts):
        raise LoadError(f"malformed or private name {name!r}")
    for k in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:k])
        if not _user_trusted(module_name, packages) and not any(
            p.startswith(module_name + ".") or p == module_name for p in packages
        ):
            continue
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        for p in parts[k:]:
            if p.startswith("_"):
                raise LoadError(
                    f"the file refers to {name!r}, which reads the private attribute {p!r}"
                )
            obj = getattr(obj, p, None)
            if obj is None:
                raise LoadError(f"cannot import {name!r}: no attribute {p!r}")
        return obj
    raise LoadError(f"cannot import {name!r}")


def resolve_function(name: str, trusted: Iterable[str] = ()) -> Any:
    """The callable a graph's ``call_function`` target (or a stored function value) names."""
    trusted = tuple(trusted)
    found = _ruled(name).get(name)
    if found is not None:
        return found
    if name.startswith("torch.ops.aten."):
        return _aten(name)
    found = _torch_function(name)
    if found is not None:
        return found
    method = name.removeprefix("torch.Tensor.")
    if (
        method != name
        and _IDENT.match(method)
        and not method.startswith("_")
        and callable(getattr(torch.Tensor, method, None))
        and (is_aten_op(method) or is_aten_op(method.rstrip("_")))
    ):
        return getattr(torch.Tensor, method)  # a tensor method called as a function
    if "." in name and _user_trusted(name, trusted):
        obj = _import_public(name, trusted)
        if not callable(obj):
            raise LoadError(f"{name} is not callable")
        return obj
    if "." not in name:
        raise LoadError(
            f"the graph calls the builtin {name!r}, which fxgrow does not load "
            f"(allowed builtins: {', '.join(sorted(SAFE_BUILTINS))})"
        )
    raise LoadError(
        f"the graph calls {name}, which fxgrow does not load: it is neither an op "
        f"fxgrow has rules for nor a pure torch/operator function; " + how_to_trust(name)
    )


def resolve_class(name: str, trusted: Iterable[str] = ()) -> type:
    """The ``torch.nn.Module`` subclass a module record names."""
    trusted = tuple(trusted)
    packages = (*MODULE_PACKAGES, *trusted)
    if name in KNOWN_CLASSES:
        return KNOWN_CLASSES[name]()
    if not _user_trusted(name, packages):
        raise LoadError(
            f"the file builds module class {name}, outside the trusted packages "
            f"({', '.join(MODULE_PACKAGES)}); " + how_to_trust(name)
        )
    cls = _import_public(name, packages)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise LoadError(f"{name} is not a torch.nn.Module class")
    if not _user_trusted(cls.__module__, packages):
        raise LoadError(
            f"{name} is an alias of {cls.__module__}.{cls.__qualname__}, outside "
            f"the trusted packages; " + how_to_trust(name)
        )
    return cls


def check_method(name: str, trusted: Iterable[str] = ()) -> None:
    """A ``call_method`` target: a public Tensor method that is an ATen operator, one fxgrow
    has a rule for, or one of Tensor's arithmetic dunders."""
    from ..analysis.rules.registry import METHODS

    if not _IDENT.match(name):
        raise LoadError(f"malformed method name {name!r}")
    if name in METHODS or name in TENSOR_DUNDERS:
        return
    if (
        not name.startswith("_")
        and callable(getattr(torch.Tensor, name, None))
        and (is_aten_op(name) or is_aten_op(name.rstrip("_")))
    ):
        return
    if name in tuple(trusted):
        return
    raise LoadError(
        f"the graph calls the method .{name}(), which fxgrow does not load: it is "
        f"not a tensor operation fxgrow knows; " + how_to_trust(name)
    )


def check_member(owner: torch.nn.Module, name: str, what: str) -> None:
    """``name`` may be set on (or read from) ``owner``: an identifier that is not dunder and
    shadows neither nn.Module's own state nor a method, property or descriptor of the class
    (a plain class-level default, such as a number, may be overridden)."""
    if not _PART.match(name) or name.startswith("__"):
        raise LoadError(f"malformed {what} name {name!r}")
    if name in _module_internals():
        raise LoadError(
            f"the file's {what} {name!r} would replace nn.Module's internal state "
            f"{name!r}; refusing"
        )
    found = inspect.getattr_static(type(owner), name, None)
    if found is not None and not isinstance(found, (bool, int, float, str, tuple, type(None))):
        raise LoadError(
            f"the file's {what} {name!r} would replace {type(owner).__name__}."
            f"{name} ({type(found).__name__}); refusing"
        )


@functools.cache
def _module_internals() -> frozenset[str]:
    return frozenset(vars(torch.nn.Module()))
