"""fxgrow and ``torch.compile``.

Grown students are ordinary GraphModules: ``torch.compile(student)`` compiles them like any
model.  This module adds an analysis-only backend: ``torch.compile(model,
backend=fxgrow.compile.inspect_backend)`` reports the channel groups of every graph Dynamo
captures and runs the graph unchanged (eagerly)::

    backend = fxgrow.compile.InspectBackend(model)        # or the ready-made inspect_backend
    torch.compile(model, backend=backend)(x)
    for report in backend.reports:
        print(report)                                      # groups, widths, blockers

Dynamo lifts parameters and buffers to graph inputs (``L_self_modules_conv1_parameters_
weight_``).  The backend maps them back to module paths (``conv1.weight``): by identity with
the model's tensors when it is given the model, otherwise from Dynamo's input names; it then
analyses a copy of the graph in which they are attributes again, so groups are named after
modules as in ``fxgrow.groups``.  Analysis failures are recorded in the report, never raised:
compilation always proceeds."""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

__all__ = ["CompileReport", "InspectBackend", "inspect_backend", "lift_parameters"]


@dataclass
class CompileReport:
    """What the backend found in one captured graph."""

    index: int
    graph_module: torch.fx.GraphModule  # the analysed copy (parameters as attributes)
    parameters: dict[str, str]  # Dynamo input name -> module path
    groups: list = field(default_factory=list)  # fxgrow.ChannelGroup
    error: str | None = None

    @property
    def widenable(self) -> list:
        """The groups of this graph with no blockers."""
        return [g for g in self.groups if g.widenable]

    def __str__(self) -> str:
        head = (
            f"fxgrow: graph {self.index} captured by torch.compile: "
            f"{len(self.parameters)} parameters/buffers"
        )
        if self.error:
            return f"{head}; analysis failed: {self.error}"
        lines = [f"{head}, {len(self.groups)} channel groups, {len(self.widenable)} widenable"]
        if self.groups:
            w = max(len(g.name) for g in self.groups)
            for g in self.groups:
                status = "widenable" if g.widenable else "; ".join(str(b) for b in g.blockers[:2])
                lines.append(f"  {g.name:<{w}}  {g.width:>6}  {status}")
        return "\n".join(lines)


_SOURCE = re.compile(r"^L_self_(.*)_$")


def _path_from_name(name: str) -> str | None:
    """``L_self_modules_layer1_modules_0_modules_conv1_parameters_weight_`` ->
    ``layer1.0.conv1.weight`` (None if the name is not a lifted attribute)."""
    m = _SOURCE.match(name)
    if m is None:
        return None
    body = "_" + m.group(1)
    parts = re.split(r"_(modules|parameters|buffers)_", body)
    # re.split with a group keeps the separators: ['', 'modules', 'layer1', 'modules', ...]
    if len(parts) < 3 or parts[0] != "":
        return None
    names = parts[2::2]
    kinds = parts[1::2]
    if (
        not kinds
        or kinds[-1] not in ("parameters", "buffers")
        or any(k != "modules" for k in kinds[:-1])
    ):
        return None
    return ".".join(names)


def lift_parameters(
    gm: torch.fx.GraphModule, example_inputs: list, model: torch.nn.Module | None = None
) -> tuple[torch.fx.GraphModule, tuple, dict[str, str]]:
    """A copy of Dynamo's graph in which lifted parameters/buffers are ``get_attr`` nodes on a
    module tree under their module paths: (graph module, the remaining real inputs,
    input name -> path)."""
    by_id: dict[int, str] = {}
    if model is not None:
        for name, t in list(model.named_parameters(remove_duplicate=False)) + list(
            model.named_buffers(remove_duplicate=False)
        ):
            by_id.setdefault(id(t), name)
    root = torch.nn.Module()
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    inputs: list = []
    mapping: dict[str, str] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, value in zip(placeholders, example_inputs):
        path = by_id.get(id(value)) if isinstance(value, torch.Tensor) else None
        if path is None and isinstance(value, torch.Tensor):
            path = _path_from_name(str(node.target))
        if path is not None and path not in mapping.values():
            _place(root, path, value)
            env[node] = graph.get_attr(path)
            mapping[str(node.target)] = path
        else:
            env[node] = graph.placeholder(str(node.target))
            inputs.append(value)
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            env[node] = graph.node_copy(node, lambda a: env[a])
            if node.op in ("get_attr", "call_module"):  # what the graph itself holds
                _place(root, str(node.target), _fetch(gm, str(node.target)))
    return torch.fx.GraphModule(root, graph, "CapturedGraph"), tuple(inputs), mapping


def _fetch(module: torch.nn.Module, path: str) -> Any:
    return operator.attrgetter(path)(module)


def _place(root: torch.nn.Module, path: str, value: Any) -> None:
    owner_path, _, leaf = path.rpartition(".")
    owner = root
    for part in owner_path.split(".") if owner_path else []:
        if part not in owner._modules:
            owner.add_module(part, torch.nn.Module())
        owner = owner.get_submodule(part)
    if isinstance(value, torch.nn.Module):
        owner.add_module(leaf, value)
    elif isinstance(value, torch.nn.Parameter):
        owner.register_parameter(leaf, value)
    elif isinstance(value, torch.Tensor):
        owner.register_buffer(leaf, value)
    else:
        setattr(owner, leaf, value)


class InspectBackend:
    """A ``torch.compile`` backend that analyses each captured graph with fxgrow and runs it
    unchanged.  ``model``: the compiled module (maps lifted tensors to module paths exactly);
    ``verbose``: print each report to stderr; ``then``: a backend to hand the graph to after the
    analysis (default: run it eagerly), e.g. ``"inductor"``."""

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        *,
        verbose: bool = False,
        then: str | Callable | None = None,
    ) -> None:
        self.model = model
        self.verbose = verbose
        self.then = then
        self.reports: list[CompileReport] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        report = self.inspect(gm, example_inputs)
        self.reports.append(report)
        if self.verbose:
            print(report, file=sys.stderr)
        if self.then is None:
            return gm.forward
        if isinstance(self.then, str):
            from torch._dynamo.backends.registry import lookup_backend

            return lookup_backend(self.then)(gm, example_inputs)
        return self.then(gm, example_inputs)

    def inspect(self, gm: torch.fx.GraphModule, example_inputs: list) -> CompileReport:
        """Analyse one captured graph (parameters lifted to attributes); any failure becomes the
        report's ``error``, never an exception, so compilation goes on."""
        index = len(self.reports)
        try:
            lifted, inputs, mapping = lift_parameters(gm, example_inputs, self.model)
        except Exception as e:  # never break compilation
            return CompileReport(index, gm, {}, error=f"{type(e).__name__}: {e}")
        try:
            from .analysis import analyze

            real = tuple(int(x) if isinstance(x, torch.SymInt) else x for x in inputs)
            groups = analyze(lifted, real).groups
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return CompileReport(index, lifted, mapping, error=f"{type(e).__name__}: {first}")
        return CompileReport(index, lifted, mapping, groups)


def inspect_backend(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
    """Ready-made analysis-only backend: prints the channel groups of each captured graph to
    stderr and runs the graph unchanged.  For the reports as objects use ``InspectBackend``."""
    return InspectBackend(verbose=True)(gm, example_inputs)
