"""Dead-code elimination that never removes what the teacher ran for its side effect.

``Graph.eliminate_dead_code`` removes every node without users unless torch calls it impure,
and torch does not call ``x.add_(pos)`` (an in-place method whose result is unused) impure:
the update is lost and the student is wrong.  Here a node may be removed only if

* it had users in the teacher's graph (what the rewrite made dead: the sizes a rewritten view
  or split no longer reads), and
* it cannot mutate anything: a ``get_attr``, or a call of a torch or ``operator`` function or
  a tensor method that is not in place, has no ``out=`` and is not impure by torch's rules.
  Module calls and user functions are kept (a module may update a cache or running
  statistics; a wrapped function may do anything)."""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
import torch.fx

from ..analysis.arguments import argument

_MUTATING_OPERATORS = {
    operator.setitem,
    operator.delitem,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
    operator.imatmul,
}


def _in_place_name(name: str) -> bool:
    """``add_``, ``copy_``; ``__iadd__``, ``__setitem__``, ``__delitem__``."""
    if name.startswith("__") and name.endswith("__"):
        return (
            name.startswith("__i")
            and name not in ("__index__", "__int__", "__invert__", "__iter__")
            or name in ("__setitem__", "__delitem__", "__setattr__", "__delattr__")
        )
    return name.endswith("_")


def _mutable_schema(target) -> bool:
    schema = getattr(target, "_schema", None)
    return bool(schema is not None and getattr(schema, "is_mutable", False))


def has_side_effect(node: torch.fx.Node) -> bool:
    """True unless ``node`` is known to compute a value and change nothing."""
    if node.op in ("placeholder", "output", "call_module"):
        return True
    if node.op == "get_attr":
        return False
    if "out" in node.kwargs or argument(node, None, "inplace", False) is True:
        return True
    if node.op == "call_method":
        return _in_place_name(str(node.target)) or node.target in (
            "copy_",
            "resize_",
            "set_",
            "put_",
        )
    if node.op != "call_function":
        return True
    target = node.target
    if target in _MUTATING_OPERATORS or _mutable_schema(target):
        return True
    module = getattr(target, "__module__", None) or ""
    aten = isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))
    if not (
        aten
        or module == "_operator"
        or module == "torch"
        or module.startswith("torch.")
        or target is getattr
    ):
        return True  # a user function: it may do anything
    if _in_place_name(getattr(target, "__name__", "")):
        return True
    try:
        return bool(node.is_impure())
    except Exception:  # torch cannot tell: keep it
        return True


def unused_nodes(graph: torch.fx.Graph) -> set[str]:
    """Names of the nodes without users: what the graph runs only for its side effects."""
    return {n.name for n in graph.nodes if not n.users}


def eliminate_dead_code(graph: torch.fx.Graph, keep: Iterable[str]) -> None:
    """Remove nodes that lost their users and have no side effect; never those in ``keep``
    (the teacher's nodes that had no users to begin with)."""
    keep = set(keep)
    graph.eliminate_dead_code(is_impure_node=lambda n: n.name in keep or has_side_effect(n))
