"""The depth half of ``deepen`` and ``grow`` on a captured graph: layers inserted after named
nodes, copies of named residual blocks, residual stages extended to a block count.

Invariant: the analysed teacher graph is never modified (``deepened`` works on a copy,
``grow_stages`` on the student it is given); a name that matches nothing raises
:class:`UnknownGroupError` with the closest names, never a silently smaller student."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch.fx

from ..analysis import Analysis
from ..errors import InputError, UnknownGroupError
from ..suggest import did_you_mean


def find_nodes(gm: torch.fx.GraphModule, name: str) -> list[torch.fx.Node]:
    """The nodes named ``name``, else the calls of the module at that path."""
    nodes = [n for n in gm.graph.nodes if n.name == name]
    if not nodes:
        nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == name]
    if not nodes:
        known = [n.name for n in gm.graph.nodes] + [
            n.target for n in gm.graph.nodes if n.op == "call_module"
        ]
        raise UnknownGroupError(
            f"no node or module named {name!r} in the graph{did_you_mean(name, known)}"
        )
    return nodes


def deepened(
    analysis: Analysis,
    after: str | Iterable[str],
    *,
    kind: str = "identity",
    kernel_size: int = 3,
    batchnorm: bool = False,
    layer: str | None = None,
    seed: int = 0,
) -> torch.fx.GraphModule:
    """A copy of ``analysis.gm`` with layers (``kind`` as in ``fxgrow.deepen``) inserted after
    the nodes or modules ``after`` names; not yet verified."""
    student = copy.deepcopy(analysis.gm)
    names = [after] if isinstance(after, str) else list(after)
    if not names:
        raise InputError("after= names no node or module")
    if kind == "block":
        _copy_blocks(analysis, student, names)
        student.recompile()
        return student
    from .deepen import deepen_node, node_values

    targets = [n for name in names for n in find_nodes(student, name)]
    values = node_values(student, analysis.example_inputs, [n.name for n in targets])
    teacher_nodes = {n.name: n for n in analysis.gm.graph.nodes}
    sp = analysis.state.spaces
    produced = {g.root for g in analysis.all_groups if any(m.role == "produce" for m in g.members)}
    for node in targets:
        info = analysis.state.values.get(teacher_nodes[node.name])
        axis = None
        if info is not None and getattr(info, "ndim", 0) >= 3:

            def channel(layout) -> bool:  # some space on it is written by a layer
                return any(r in produced for r in sp.roots(layout))

            has = [d for d in (1, info.ndim - 1) if channel(info.layouts[d])]
            axis = has[0] if len(has) == 1 else None
        deepen_node(
            student,
            node,
            values.get(node.name),
            axis,
            kind=kind,
            kernel_size=kernel_size,
            batchnorm=batchnorm,
            layer=layer,
            seed=seed,
        )
    student.recompile()
    return student


def _copy_blocks(analysis: Analysis, student: torch.fx.GraphModule, names: list[str]) -> None:
    """``kind="block"``: a copy of each named residual block right after it."""
    from ..analysis.blocks import find_blocks, why_not_residual
    from .block_copy import insert_blocks_after

    vals = analysis.state.vals_by_name(student)
    blocks = {b.path: b for b in find_blocks(student, vals) if b.residual}
    if any(name not in blocks for name in names):  # T5-like blocks adding I in a child
        blocks = {b.path: b for b in find_blocks(student, vals, nested=True) if b.residual} | blocks
    for name in names:
        if name not in blocks:
            why = why_not_residual(student, vals, name)
            raise UnknownGroupError(
                f"no residual block named {name!r}"
                + (f": module {name!r} runs in the graph, but {why}" if why else "")
                + did_you_mean(
                    name,
                    blocks,
                    otherwise=f"; residual blocks: {', '.join(list(blocks)[:8]) or 'none'}",
                )
            )
    insert_blocks_after(student, [blocks[name] for name in names])


def grow_stages(student: torch.fx.GraphModule, inputs: tuple, blocks: Mapping[str, int]) -> None:
    """Extend each residual stage named in ``blocks`` to its new block count, in place."""
    from ..analysis.blocks import find_stages
    from ..analysis.shapes import propagate
    from .block_copy import grow_stage

    if not isinstance(blocks, Mapping):
        raise InputError("blocks must map a stage name to its new block count")
    vals = propagate(student, inputs)
    found = {s.name: s for s in find_stages(student, vals)}
    if any(name not in found for name in blocks):  # T5-like blocks adding I in a child
        found = {s.name: s for s in find_stages(student, vals, nested=True)} | found
    for name, count in blocks.items():
        if name not in found:
            raise UnknownGroupError(
                f"no residual stage named {name!r}"
                + did_you_mean(name, found, otherwise=f"; stages: {', '.join(found) or 'none'}")
            )
        if isinstance(count, bool) or not isinstance(count, int):
            raise InputError(f"block count for {name!r} must be an integer, got {count!r}")
        grow_stage(student, found[name], count)
    student.recompile()
