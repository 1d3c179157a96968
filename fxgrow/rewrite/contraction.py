"""The student's share scales on contractions between two activations.

For each ``ContractionScale`` whose class grows, the operand is multiplied by a constant
buffer holding the shares of its contracted axis (``expand(...).fraction``: 1 / c(g(j)) for an
equal split) right before the contracting node, and only there: see
``analysis/contraction.py`` for why that is exact."""

from __future__ import annotations

import operator

import torch
import torch.fx

from ..planning.index_map import expand
from ..unique import unique_name

PREFIX = "fxgrow_contract_scale"


def insert_scale(
    student: torch.fx.GraphModule,
    prefix: str,
    start: int,
    scale: torch.Tensor,
    user: torch.fx.Node,
    operand: torch.fx.Node,
) -> int:
    """Register ``scale`` as the buffer ``{prefix}{n}`` (the first free ``n >= start``: a
    student widened again has some) and make ``user`` read ``operand * scale`` in place of
    ``operand``; returns ``n``."""
    name = unique_name(prefix, lambda s: hasattr(student, s), start=start)
    n = int(name[len(prefix) :])
    student.register_buffer(name, scale)
    with student.graph.inserting_before(user):
        factor = student.graph.get_attr(name)
        scaled = student.graph.call_function(operator.mul, (operand, factor))
    user.replace_input_with(operand, scaled)
    return n


def insert_scales(student: torch.fx.GraphModule, analysis, maps: dict) -> bool:
    """Insert the scale nodes into ``student`` (a copy of the analysed graph); True if any."""
    state, sp = analysis.state, analysis.state.spaces
    nodes = {n.name: n for n in student.graph.nodes}
    like = next(
        (t for t in (*student.parameters(), *student.buffers()) if t.is_floating_point()), None
    )
    device = like.device if like is not None else torch.device("cpu")
    examples = {node.name: v for node, v in state.vals.items()} if state.scales else {}
    changed = False
    n = 0
    for rec in state.scales:
        if not any(r in maps for r in sp.roots(rec.layout)):
            continue
        user, operand = nodes[rec.user], nodes[rec.operand]
        dtype = getattr(examples.get(rec.operand), "dtype", torch.float32)
        shares = expand(sp, rec.layout, maps).fraction
        scale = shares.to(dtype).view([-1] + [1] * (rec.ndim - 1 - rec.axis)).to(device)
        n = insert_scale(student, PREFIX, n, scale, user, operand)
        changed = True
    return changed
