"""Concrete values of a graph being traced, for control flow on sizes.

:class:`ExampleValues` evaluates nodes of the partial graph on the example inputs (lazily,
each node once).  Only *static* values are handed back to Python: ones computed from tensor
metadata (``shape``, ``size()``, ``dim()``, ``len``) and constants by plain arithmetic, never
from tensor data (``x.sum() > 0``, ``.item()``): a branch on data would be right for the
example inputs only.  Values read from ``device`` or ``dtype`` are not static either: the
graph also runs on meta tensors (shape propagation, streaming) and in float64 (the
verifier's reference), where they differ."""

from __future__ import annotations

import builtins
import contextlib
import operator
from typing import Any

import torch
import torch.fx
import torch.fx._symbolic_trace as _fx_trace
from torch.utils import _pytree as pytree

from ..errors import NotStatic
from ..fxnode import node_arg, target_function, target_name

_META_ATTRS = frozenset({"shape", "ndim"})
_META_METHODS = frozenset({"size", "dim", "numel", "nelement", "ndimension"})


class ExampleValues:
    """Lazy evaluation of a graph under construction on ``example_inputs``.

    Invariant: ``static(node)`` holds only if ``node``'s value is a function of the example
    inputs' sizes (and constants) alone."""

    def __init__(self, root: torch.nn.Module, example_inputs: tuple) -> None:
        self.root = root
        self.inputs = tuple(example_inputs)
        self.vals: dict[torch.fx.Node, Any] = {}
        self._static: dict[torch.fx.Node, bool] = {}

    def value(self, node: torch.fx.Node) -> Any:
        """``node``'s value on the example inputs (its ancestors first, in graph order)."""
        if node in self.vals:
            return self.vals[node]
        needed, stack = {node}, [node]
        while stack:
            for n in stack.pop().all_input_nodes:
                if n not in needed and n not in self.vals:
                    needed.add(n)
                    stack.append(n)
        # fx's patches (Module.__call__, wrapped functions) are undone while the real ops run
        revert = getattr(_fx_trace, "_maybe_revert_all_patches", contextlib.nullcontext)
        with revert(), torch.no_grad():
            for n in node.graph.nodes:
                if n in needed:
                    self.vals[n] = self._run(n)
        return self.vals[node]

    def _run(self, node: torch.fx.Node) -> Any:
        env = self.vals.__getitem__
        args = torch.fx.node.map_arg(node.args, env)
        kwargs = torch.fx.node.map_arg(node.kwargs, env)
        op = node.op
        if op == "placeholder":
            index = [n for n in node.graph.nodes if n.op == "placeholder"].index(node)
            if index < len(self.inputs):
                result = self.inputs[index]
            elif args:
                result = args[0]  # the parameter's default
            else:
                raise NotStatic(f"no example input for {node.target!r}")
        elif op == "get_attr":
            result = operator.attrgetter(target_name(node))(self.root)
        elif op == "call_module":
            result = self.root.get_submodule(target_name(node))(*args, **kwargs)
        elif op == "call_method":
            self_obj, *rest = args
            result = getattr(self_obj, target_name(node))(*rest, **kwargs)
        elif op == "call_function":
            result = target_function(node)(*args, **kwargs)
        else:
            raise NotStatic(f"node {node.name} ({op})")
        return result

    def static(self, node: torch.fx.Node) -> bool:
        """Whether ``node``'s value depends only on sizes and constants."""
        known = self._static.get(node)
        if known is None:
            self.value(node)  # its ancestors' values, without deep recursion
            known = self._static[node] = self._is_static(node)
        return known

    def _is_static(self, node: torch.fx.Node) -> bool:
        if node.op == "call_function" and node.target is builtins.getattr:
            name = node.args[1]
            if name in _META_ATTRS:
                return True
            if name in ("device", "dtype"):
                return False
        if node.op == "call_method" and node.target in _META_METHODS:
            return True
        if (
            node.op == "call_function"
            and node.target is builtins.len
            and isinstance(self.value(node_arg(node, 0)), torch.Tensor)
        ):
            return True
        if node.op in ("call_module", "placeholder") and any(
            isinstance(v, torch.Tensor) for v in pytree.tree_leaves(self.value(node))
        ):
            return False
        if any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(self.value(node))):
            return False
        return all(self.static(n) for n in node.all_input_nodes)

    def concrete(self, node: torch.fx.Node) -> Any:
        """The static value of ``node``, or :class:`NotStatic`."""
        try:
            ok = self.static(node)
        except NotStatic:
            raise
        except Exception as e:  # the partial graph does not run: leave it to fx
            raise NotStatic(f"{type(e).__name__}: {e}") from e
        if not ok:
            raise NotStatic(f"{node.name} depends on tensor data, the device or the dtype")
        return self.value(node)
