"""Label runs: where each unit of a channel-shuffle chain travels, at any widths.

A chain of channel shuffles, chunks and concatenations ties its channel spaces together
(``SpaceTable.ties``); its *component* is every class root linked to a given one through
those ties.  A label run executes the graph's data-movement nodes (cat, chunk, split, views,
transposes, channel shuffles, size reads) on *label tensors*: float64 tensors whose entries
name units, every axis that carries none of the component's spaces cut to size 1.  A node
whose output spaces no input carries (a conv, a linear) is a *producer*: it emits the labels
given for it, at the width given for it.  A node whose output carries its input's spaces
unchanged (BatchNorm, an activation, a depthwise conv) passes the input's labels on.  Nothing
else may touch the component: the run refuses, naming the node.

Invariant: a run only moves labels the way the graph moves channels, so at the teacher's
widths every recorded vector lists each producer unit where the teacher has it, and at other
widths it lists where the student, built from the same graph, has them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.fx

from ..analysis import Analysis
from ..analysis.layout import Atom, Fixed, Layout, Prod, SpaceTable, Stack, Zip
from ..analysis.rules.registry import node_has_trait
from ..analysis.values import TensorInfo
from ..errors import WidthError
from ..fxnode import target_function, target_name

FRESH = -1.0  # the label of a position that carries no teacher unit
_SPAN = 2**20  # units per producer in a label code

# what the label run executes on labels: ops that only move, select, join or reshape positions,
# and size reads
_MOVE_TRAITS = ("moves_positions", "reshape", "swap_axes", "permute_axes", "size_read")


class LabelRun(NamedTuple):
    """What one run recorded.  ``vectors``: node name -> labels along its one component
    axis (nodes whose label tensor has other axes above size 1 are left out); ``members``:
    node name -> the labels its output carries; ``sizes``: layout signature -> size of every
    component axis seen; ``signatures``: node name -> signature of its vector's axis;
    ``producers``: producer node names in graph order, with their widths in this run."""

    vectors: dict[str, torch.Tensor]
    members: dict[str, frozenset]
    sizes: dict[tuple, int]
    signatures: dict[str, tuple]
    producers: dict[str, int]


def signature(sp: SpaceTable, layout: Layout) -> tuple:
    """A layout's structure with every atom replaced by its class root: two axes with one
    signature carry the same units in the same order."""
    out: list[tuple] = []
    for seg in sp.resolve(layout):
        if isinstance(seg, Atom):
            out.append(("A", sp.find(seg.id)))
        elif isinstance(seg, Fixed):
            out.append(("F", seg.size))
        elif isinstance(seg, Prod):
            out.append(("P", signature(sp, seg.outer), signature(sp, seg.inner)))
        elif isinstance(seg, Zip):
            out.append(("Z", tuple(signature(sp, p) for p in seg.parts)))
        else:
            assert isinstance(seg, Stack), seg
            out.append(("S", tuple(signature(sp, r) for r in seg.rows)))
    return tuple(out)


def component(analysis: Analysis, root: int) -> frozenset[int]:
    """Every class root linked to ``root`` through growth ties (empty if none)."""
    sp = analysis.state.spaces
    links: dict[int, set[int]] = {}
    for layouts, _ in sp.ties:
        roots = {r for lay in layouts for r in sp.roots(lay)}
        for r in roots:
            links.setdefault(r, set()).update(roots)
    if root not in links:
        return frozenset()
    seen, todo = {root}, [root]
    while todo:
        for r in links.get(todo.pop(), ()):
            if r not in seen:
                seen.add(r)
                todo.append(r)
    return frozenset(seen)


def code(index: int, units: torch.Tensor) -> torch.Tensor:
    """Labels of ``units`` of the producer numbered ``index`` (-1 stays fresh)."""
    units = units.to(torch.float64)
    return torch.where(units < 0, torch.full_like(units, FRESH), index * _SPAN + units)


def unit_of(label: float) -> tuple[int, int]:
    """(producer number, unit) of a label."""
    p, u = divmod(int(label), _SPAN)
    return p, u


def run(
    analysis: Analysis, comp: frozenset[int], labels_for: Callable[[str, int, int], torch.Tensor]
) -> LabelRun:
    """Execute the component's data movement; ``labels_for(node, number, teacher width)``
    gives a producer's labels (its length is the producer's width in this run)."""
    state = analysis.state
    sp = state.spaces
    lab: dict[torch.fx.Node, object] = {}
    out = LabelRun({}, {}, {}, {}, {})
    for node in state.gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        info = state.values.get(node)
        axes = _component_axes(sp, info, comp)
        inputs = [i for i in node.all_input_nodes if i in lab]
        if axes:
            assert isinstance(info, TensorInfo)  # _component_axes: only tensors have axes
            value = _tensor_node(analysis, node, info, axes, inputs, lab, comp, labels_for, out)
            lab[node] = value
            _record(sp, node, info, axes, value, out)
        elif inputs and not isinstance(info, TensorInfo):  # sizes, chunk tuples
            if any(isinstance(lab[i], torch.Tensor) for i in inputs) and not _movable(
                analysis, node
            ):
                raise WidthError(
                    f"{node.name}: fxgrow cannot follow the channels of a channel shuffle "
                    f"chain through this op, so it cannot place fresh units in the chain"
                )
            lab[node] = _execute(analysis, node, lab)
        # else: a consumer (its output carries none of the component) or unrelated
    return out


def _component_axes(sp: SpaceTable, info, comp: frozenset[int]) -> list[int]:
    if not isinstance(info, TensorInfo) or not comp:
        return []
    return [d for d, lay in enumerate(info.layouts) if comp.intersection(sp.roots(lay))]


def _tensor_node(
    analysis: Analysis,
    node: torch.fx.Node,
    info: TensorInfo,
    axes: list[int],
    inputs: list[torch.fx.Node],
    lab: dict,
    comp: frozenset[int],
    labels_for: Callable[[str, int, int], torch.Tensor],
    out: LabelRun,
) -> Any:
    sp = analysis.state.spaces
    if inputs and _movable(analysis, node):
        return _execute(analysis, node, lab)
    sigs = [signature(sp, info.layouts[d]) for d in axes]
    carried: set[int] = set()
    same: list[torch.Tensor] = []
    for i in inputs:
        other = analysis.state.values.get(i)
        if not isinstance(other, TensorInfo) or not isinstance(lab[i], torch.Tensor):
            continue
        their = _component_axes(sp, other, comp)
        if (
            other.ndim == info.ndim
            and their == axes
            and [signature(sp, other.layouts[d]) for d in their] == sigs
        ):
            same.append(lab[i])
        carried.update(r for d in their for r in sp.roots(other.layouts[d]))
    if same:  # a per-channel op: the same units in the same places
        if any(not torch.equal(t, same[0]) for t in same[1:]):
            raise WidthError(
                f"{node.name}: its operands carry different units of a channel shuffle "
                f"chain at the same positions; fxgrow cannot place fresh units through it"
            )
        return same[0]
    mine = {r for d in axes for r in sp.roots(info.layouts[d])}
    if carried & mine or len(axes) != 1:
        raise WidthError(
            f"{node.name}: fxgrow cannot follow the channels of a channel shuffle chain "
            f"through this op, so it cannot place fresh units in the chain"
        )
    labels = labels_for(node.name, len(out.producers), info.shape[axes[0]])
    out.producers[node.name] = len(labels)
    shape = [1] * info.ndim
    shape[axes[0]] = -1
    return labels.to(torch.float64).reshape(shape)


def _movable(analysis: Analysis, node: torch.fx.Node) -> bool:
    """Whether the label run executes ``node``: an op that only moves positions or reads sizes."""
    return any(node_has_trait(node, t, analysis.state.gm) for t in _MOVE_TRAITS)


def _execute(analysis: Analysis, node: torch.fx.Node, lab: dict):
    """The node's op on label-world values (inputs outside the run: the example's)."""
    vals = analysis.state.vals

    def arg(n: torch.fx.Node):
        if n in lab:
            return lab[n]
        v = vals.get(n)
        if isinstance(v, torch.Tensor):
            raise WidthError(
                f"{node.name}: mixes the channels of a channel shuffle chain with another "
                f"tensor ({n.name}); fxgrow cannot place fresh units through it"
            )
        return v

    args = torch.fx.node.map_arg(node.args, arg)
    kwargs = torch.fx.node.map_arg(node.kwargs, arg)
    if node.op == "call_module":
        return analysis.state.gm.get_submodule(target_name(node))(*args, **kwargs)
    if node.op == "call_method":
        self, *rest = args
        return getattr(self, target_name(node))(*rest, **kwargs)
    return target_function(node)(*args, **kwargs)


def _record(sp: SpaceTable, node, info, axes, value, out: LabelRun) -> None:
    if not isinstance(value, torch.Tensor) or value.dim() != info.ndim:
        raise WidthError(f"{node.name}: its label tensor lost the node's axes")
    for d in axes:
        sig = signature(sp, info.layouts[d])
        seen = out.sizes.setdefault(sig, value.shape[d])
        if seen != value.shape[d]:
            raise WidthError(
                f"{node.name}: one channel layout takes two sizes ({seen} and "
                f"{value.shape[d]}) at these widths"
            )
    out.members[node.name] = frozenset(value.reshape(-1).tolist())
    if len(axes) == 1 and value.numel() == value.shape[axes[0]]:
        out.vectors[node.name] = value.reshape(-1)
        out.signatures[node.name] = signature(sp, info.layouts[axes[0]])
