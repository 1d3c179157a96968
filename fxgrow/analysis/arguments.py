"""An fx node's arguments by name, as its target's signature binds them.

``torch.fx.Node.normalized_arguments`` binds a call's positional and keyword arguments to the
target's signature, defaults filled in, so ``dim`` is found whether it was written
``sum(x, 1)``, ``sum(x, dim=1)`` or left to its default.  Where torch.fx cannot bind them (a
method call, overloads it cannot tell apart, ``*args`` signatures, a module outside
``torch.nn``) the argument is read at its position, then by its keyword.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.fx

from ..errors import MissingArgument

MISSING: Any = object()
"""No default: a missing argument raises :class:`MissingArgument`."""

_UNBOUND: Any = object()


def bound_arguments(node: torch.fx.Node, root: torch.nn.Module | None = None) -> dict | None:
    """Every argument of ``node`` by parameter name (defaults included), or None where
    torch.fx cannot bind them (a module call needs ``root``, the module owning it)."""
    if node.op != "call_function" and (node.op != "call_module" or root is None):
        return None
    try:
        # ``root`` is read for module calls only (and is a module there, checked above)
        pair = node.normalized_arguments(
            cast(torch.nn.Module, root), normalize_to_only_use_kwargs=True
        )
    except (TypeError, ValueError, RuntimeError, AssertionError):
        return None  # a call its target's signature does not take as written
    return dict(pair.kwargs) if pair is not None else None


def argument(
    node: torch.fx.Node,
    index: int | None,
    name: str | None = None,
    default: Any = MISSING,
    *,
    root: torch.nn.Module | None = None,
    bound: dict | None = _UNBOUND,
) -> Any:
    """The argument ``name`` of ``node`` as its signature binds it; else the one at position
    ``index`` or keyword ``name`` as written; else ``default``.  ``bound`` is
    :func:`bound_arguments` of ``node`` when the caller has it already."""
    if name is not None:
        if bound is _UNBOUND:
            bound = bound_arguments(node, root)
        if bound is not None and name in bound:
            return bound[name]
    if index is not None and index < len(node.args):
        return node.args[index]
    if name is not None and name in node.kwargs:
        return node.kwargs[name]
    if default is MISSING:
        raise MissingArgument(f"{node.name} has no argument {name or index}")
    return default


def with_argument(
    args: tuple, kwargs: dict, index: int, names: str | tuple[str, ...], value: Any
) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of a call with one argument set to ``value``: the one at position
    ``index`` where the call passes it there, else the keyword among ``names`` it passes (the
    first of ``names`` where it passes none)."""
    if index < len(args):
        return (*args[:index], value, *args[index + 1 :]), kwargs
    names = (names,) if isinstance(names, str) else names
    name = next((n for n in names if n in kwargs), names[0])
    return args, {**kwargs, name: value}
