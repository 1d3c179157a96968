"""The fx graph of a saved file, rebuilt from its node records (``load``'s graph half).

Invariant: every ``call_function`` target is resolved and every ``call_method`` name checked
through :mod:`fxgrow.io.trust`'s allowlist; ``call_module`` and ``get_attr`` name only modules
and tensors the file itself builds; node, input and keyword names are identifiers; ``getattr``
reads only public attributes named by a constant string.  Nothing here runs the graph."""

from __future__ import annotations

import builtins
import re
from typing import Any

import torch
import torch.fx

from ..errors import LoadError
from .trust import MODULE_PACKAGES, check_method, resolve_function

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _graph(desc: dict, root: torch.nn.Module, trusted: tuple, dec_env: Any) -> torch.fx.Graph:
    graph = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    leaves = {str(r["path"]) for r in desc["modules"] if r.get("role") == "leaf"}
    attrs = set(desc["tensors"]) | {str(r["path"]) for r in desc["modules"]}
    for rec in desc["graph"]:
        op, name, target = rec["op"], str(rec["name"]), rec["target"]
        if not _IDENT.match(name):
            raise LoadError(f"malformed node name {name!r}")
        if op == "call_function":
            target = resolve_function(str(target), trusted)
        elif op == "call_module":
            if target not in leaves:
                raise LoadError(
                    f"node {name} calls module {target!r}, which the file does not build"
                )
        elif op == "get_attr":
            if target not in attrs:
                raise LoadError(
                    f"node {name} reads {target!r}, which is neither a tensor nor a "
                    f"module of the file"
                )
        elif op == "call_method":
            check_method(str(target), trusted)
        elif op == "placeholder":
            if not _IDENT.match(str(target)) or str(target).startswith("__"):
                raise LoadError(f"node {name}: malformed input name {target!r}")
        elif op != "output":
            raise LoadError(f"node {name}: unknown op {op!r}")
        args = dec_env(rec["args"], env)
        kwargs = dec_env(rec["kwargs"], env)
        if (
            not isinstance(args, tuple)
            or not isinstance(kwargs, dict)
            or not all(isinstance(k, str) and _IDENT.match(k) for k in kwargs)
        ):
            raise LoadError(f"node {name}: malformed arguments")
        if target is builtins.getattr and (
            len(args) < 2 or not isinstance(args[1], str) or args[1].startswith("_")
        ):
            raise LoadError(
                f"node {name} reads the attribute {args[1:2]!r:.40} (only public "
                f"attributes named by a constant string are loaded)"
            )
        node = graph.create_node(op, target, args, kwargs, name=name)
        if node.name != name:
            raise LoadError(f"duplicate or reserved node name {name!r}")
        if "nn_module_stack" in rec:
            node.meta["nn_module_stack"] = {
                str(k): (str(p), str(t)) for k, p, t in rec["nn_module_stack"]
            }
        env[name] = node
    return graph


def _codegen(graph: torch.fx.Graph, cg: dict | None) -> None:
    if not cg:
        return
    from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo
    from torch.utils._pytree import treespec_loads

    for spec in (cg.get("in_spec"), cg.get("out_spec")):
        _import_spec_types(spec)
    names = [str(a) for a in cg["orig_args"]]
    if not all(_IDENT.match(a) for a in names):
        raise LoadError("malformed input names in the pytree signature")
    if not cg.get("in_spec"):  # torch's pytree code generator always has one
        raise LoadError("the pytree signature has no input spec")
    graph._codegen = _PyTreeCodeGen(
        _PyTreeInfo(
            names,
            treespec_loads(cg["in_spec"]),
            treespec_loads(cg["out_spec"]) if cg.get("out_spec") else None,
        )
    )


def _import_spec_types(spec: str | None) -> None:
    """Import the modules that register the pytree types a treespec names (ModelOutput ...),
    from the trusted model packages only."""
    import importlib

    if not spec:
        return
    for name in set(re.findall(r'"type": "([A-Za-z0-9_.]+)"', spec)):
        mod = name.rpartition(".")[0]
        if (
            mod
            and any(mod == p or mod.startswith(p + ".") for p in MODULE_PACKAGES)
            and not any(part.startswith("__") for part in mod.split("."))
        ):
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
