"""Contractions between two activations, kept exact by a per-channel scale in the student.

A contraction ``y = sum_i a_i b_i`` over a channel space whose operands are both activations
(no parameter to divide, as a consumer's columns are) over-counts unit i by its replication
count: in the student both ``a`` and ``b`` hold c(i) equal copies of unit i, so
``sum_j a_j b_j = sum_i c(i) a_i b_i``.  Multiplying ONE operand, right before the
contraction, by the shares of the copies (a constant buffer ``s_j``, ``s_j = 1 / c(g(j))`` for
an equal split, any fractions summing to 1 over a unit's copies otherwise) gives

    sum_j s_j a_{g(j)} b_{g(j)} = sum_i a_i b_i (sum_{j: g(j) = i} s_j) = sum_i a_i b_i,

exact by construction, whatever else reads ``a`` or ``b`` (the scale is a new node on this
contraction's input only).  Fresh units (share 0) contribute nothing, as at a consumer.
Gradients stay in the Net2Net relation: d y / d a_j = s_j b_j, what a divided consumer column
gives.  The rewrite (``rewrite/contraction.py``) inserts the node only where the class grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
from torch.utils import _pytree as pytree

from .layout import Layout


@dataclass(frozen=True)
class ContractionScale:
    """Operand ``operand`` of node ``user`` is multiplied along ``axis`` (of ``ndim``) by the
    shares of ``layout``, the contracted axis, before ``user`` contracts it."""

    user: str
    operand: str
    axis: int
    ndim: int
    layout: Layout


def _occurrences(node: torch.fx.Node, operand: torch.fx.Node) -> int:
    leaves = pytree.tree_leaves((node.args, node.kwargs))
    return sum(1 for x in leaves if x is operand)


def scale_operand(cx, operands, layout: Layout) -> bool:
    """Record a share scale on one of ``operands`` ((arg, axis) pairs contracted along
    ``layout``); False when none can take it (then the caller blocks the axis).  The operand
    scaled is the smallest floating tensor that is read once by the node (the rewrite replaces
    that one input)."""
    best = None
    for ref, axis in operands:
        if not isinstance(ref, torch.fx.Node) or _occurrences(cx.node, ref) != 1:
            continue
        ex = cx.example(ref)
        if not isinstance(ex, torch.Tensor) or not ex.is_floating_point() or ex.dim() == 0:
            continue
        if best is None or ex.numel() < best[2].numel():
            best = (ref, axis, ex)
    if best is None:
        return False
    ref, axis, ex = best
    if not cx.spaces.roots(layout):
        return True  # fixed positions only: nothing can grow, nothing to scale
    cx.state.scales.append(
        ContractionScale(cx.node.name, ref.name, axis % ex.dim(), ex.dim(), layout)
    )
    return True
