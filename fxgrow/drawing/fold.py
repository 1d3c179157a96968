"""Folding modules into boxes: each node's chain of module paths, the fold rule a ``collapse=``
value means (a depth, module path patterns, or ``"auto"``) and the box each drawn node lands in.

Invariant: ``"auto"`` folds nothing while a graph is small, else at the deepest module depth
whose boxes and edges stay within ``FOLDED_ITEMS`` and ``FOLDED_EDGES``."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..errors import InputError

# collapse="auto" folds nothing while a graph has at most AUTO_ITEMS nodes and AUTO_EDGES edges;
# beyond that it folds at the deepest module depth that leaves at most FOLDED_ITEMS boxes and
# FOLDED_EDGES edges (dense connectivity, as in DenseNet, makes edges the limit)
AUTO_ITEMS, AUTO_EDGES = 120, 200
FOLDED_ITEMS, FOLDED_EDGES = 120, 200


def module_chain(node: torch.fx.Node) -> tuple[list[str], dict[str, str]]:
    """Module paths around ``node`` (outermost first; the node's own module last for a
    call_module) and path -> class name, from ``nn_module_stack`` or the call_module target."""
    stack = node.meta.get("nn_module_stack") or {}
    paths: list[str] = []
    types: dict[str, str] = {}
    for key, value in stack.items():
        path, kind = value if isinstance(value, tuple) and len(value) == 2 else (key, None)
        if not isinstance(path, str) or not path:
            continue
        paths.append(path)
        types[path] = _class_name(kind)
    if node.op == "call_module" and isinstance(node.target, str):
        if not paths:
            parts = node.target.split(".")
            paths = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
        elif paths[-1] != node.target:
            paths.append(node.target)
    return list(dict.fromkeys(paths)), types


def _class_name(kind: Any) -> str:
    if kind is None:
        return ""
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).rpartition(".")[2].strip("'>")


def _depth(path: str) -> int:
    return path.count(".") + 1


def _fold_rule(collapse: Any):
    """collapse -> function(chain) -> folded module path or None."""
    if (
        collapse is None
        or collapse is False
        or collapse == 0
        or (isinstance(collapse, str) and collapse.lower() in ("", "none", "no", "0"))
    ):
        return None
    if isinstance(collapse, bool):
        raise InputError("collapse must be a depth, module prefixes or 'auto', not True")
    if isinstance(collapse, int):
        if collapse < 0:
            raise InputError(f"collapse depth must be >= 0, got {collapse}")
        return lambda chain: next((p for p in chain if _depth(p) >= collapse), None)
    if isinstance(collapse, str):
        if collapse.isdigit():
            return _fold_rule(int(collapse))
        patterns = [p.strip() for p in collapse.split(",") if p.strip()]
    elif isinstance(collapse, Iterable):
        patterns = [str(p) for p in collapse]
    else:
        raise InputError(f"collapse must be a depth, module prefixes or 'auto', got {collapse!r}")
    return lambda chain: next(
        (p for p in chain if any(p == pat or fnmatch.fnmatchcase(p, pat) for pat in patterns)), None
    )


def _has_tensor(value: Any) -> bool:
    return any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(value))


def _drawn(node: torch.fx.Node, vals: dict, sizes: bool) -> bool:
    if node.op == "get_attr":
        return False  # parameters and buffers
    if node.op in ("placeholder", "output"):
        return True
    if not node.users and not isinstance(vals.get(node), torch.Tensor):
        return False  # assertions, guards: no value, nobody reads them
    return sizes or _has_tensor(vals.get(node))


def choose_fold(nodes: list[torch.fx.Node], chains: dict, collapse: Any):
    """The fold function for ``collapse``.  "auto": nothing in small graphs; else the deepest
    level of *repeated blocks* (modules with a sibling of the same class, two ops or more
    each) that leaves a drawing of readable size; else the deepest such module depth."""
    if not (isinstance(collapse, str) and collapse.lower() == "auto"):
        return _fold_rule(collapse)
    items, edges = _count(nodes, chains, None)
    if items <= AUTO_ITEMS and edges <= AUTO_EDGES:
        return None
    size: dict[str, int] = {}
    kind: dict[str, str] = {}
    for n in nodes:
        paths, types = chains[n.name]
        for p in paths:
            size[p] = size.get(p, 0) + 1
            kind.setdefault(p, types.get(p, ""))
    siblings: dict[tuple[str, str], list[str]] = {}
    for p, k in size.items():
        if k >= 2 and kind[p]:
            siblings.setdefault((p.rpartition(".")[0], kind[p]), []).append(p)
    repeated: dict[int, set[str]] = {}
    for paths in siblings.values():
        if len(paths) >= 2:
            for p in paths:
                repeated.setdefault(_depth(p), set()).add(p)
    for d in sorted(repeated, reverse=True):
        chosen = repeated[d]
        rule = (lambda chosen: lambda chain: next((p for p in chain if p in chosen), None))(chosen)  # noqa: B023
        items_d, edges_d = _count(nodes, chains, rule)
        if items_d <= FOLDED_ITEMS and edges_d <= FOLDED_EDGES:
            return rule
    deepest = max((_depth(p) for p in size), default=0)
    for d in range(deepest, 0, -1):
        rule = _fold_rule(d)
        items_d, edges_d = _count(nodes, chains, rule)
        if items_d <= FOLDED_ITEMS and edges_d <= FOLDED_EDGES:
            return rule
    return _fold_rule(1)


def _assign(nodes, chains, rule) -> dict[str, str | None]:
    """fx node name -> folded module path (None: drawn on its own); single-node folds undone."""
    box: dict[str, str | None] = {}
    sizes: dict[str, int] = {}
    for n in nodes:
        p = rule(chains[n.name][0]) if rule and n.op not in ("placeholder", "output") else None
        box[n.name] = p
        if p is not None:
            sizes[p] = sizes.get(p, 0) + 1
    return {k: (p if p is not None and sizes[p] > 1 else None) for k, p in box.items()}


def _count(nodes, chains, rule) -> tuple[int, int]:
    """(items, edges) of the drawing with ``rule``."""
    box = _assign(nodes, chains, rule)
    item = {n: (p or n) for n, p in box.items()}
    edges = {
        (item[a.name], item[n.name])
        for n in nodes
        for a in n.all_input_nodes
        if a.name in item and item[a.name] != item[n.name]
    }
    return len(set(item.values())), len(edges)
