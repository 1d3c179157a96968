"""Hand-written attention, recognised in the graph: ``softmax(q @ k^T * s [+ mask]) @ v``
(with ``@``/``matmul`` or ``einsum``).

Under ``scaled_dot_product_attention`` the head dim and the key positions are blocked as
*structure* (they are not channel spaces) while the heads grow.  Written out by hand, the same
maths reaches fxgrow as two matrix products of activations and a softmax, which block the same
axes; these helpers let those rules say so with the same kind and reason, so a model with
``fused_attn=False`` gets the groups it gets with SDPA.  Recognition only chooses between
two exact outcomes: a recognised head dim is blocked as structure, an unrecognised contraction
of two activations grows with a share scale (``analysis/contraction.py``), so it cannot make a
student wrong."""

from __future__ import annotations

import torch.fx

from ..arguments import argument
from .registry import has_trait, node_has_trait

_MAX_STEPS = 6


def _is_view(node: torch.fx.Node) -> bool:
    """A view regrouping axes (Swin's mask per window: [B nW, H, N, N] <-> [B, nW, H, N, N]);
    past one, only a softmax over dim=-1 is known to be over the keys."""
    return node.op in ("call_function", "call_method") and has_trait(node.target, "reshape")


def _passes(node: torch.fx.Node, modules: dict) -> bool:
    """Scaling, masking, casts, dropout and views between the scores and the softmax, or the
    softmax and ``attn @ v``: they keep the positions."""
    if node.op == "call_module":
        m = modules.get(node.target)
        return m is not None and has_trait(m, "keeps_positions")
    return node.op in ("call_function", "call_method") and (
        has_trait(node.target, "keeps_positions") or _is_view(node)
    )


def _softmax_last(node: torch.fx.Node, modules: dict, ndim: int, viewed: bool = False) -> bool:
    """A softmax over the last axis of a ``ndim``-d tensor (``viewed``: of a view of it, so
    only ``dim=-1`` says so)."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if m is None or not has_trait(m, "softmax"):
            return False
        d = m.dim
    elif node_has_trait(node, "softmax"):
        d = argument(node, 1, "dim", None)
    else:
        return False
    if viewed:
        return d == -1
    return isinstance(d, int) and d % ndim == ndim - 1


def feeds_softmax(node: torch.fx.Node, modules: dict, ndim: int) -> bool:
    """``node`` (attention scores) reaches a softmax over its last axis through scaling,
    masking, casts and views."""
    viewed = False
    for _ in range(_MAX_STEPS):
        users = [u for u in node.users if u.op != "output"]
        if not users:
            return False
        if any(_softmax_last(u, modules, ndim, viewed) for u in users):
            return True
        nxt = [u for u in users if _passes(u, modules)]
        if len(nxt) != 1:
            return False
        node = nxt[0]
        viewed = viewed or _is_view(node)
    return False


def from_softmax(node, modules: dict, ndim: int) -> bool:
    """``node`` (attention weights) comes from a softmax over its last axis through dropout,
    masking, casts and views."""
    viewed = False
    for _ in range(_MAX_STEPS):
        if not isinstance(node, torch.fx.Node):
            return False
        if _softmax_last(node, modules, ndim, viewed):
            return True
        if not _passes(node, modules) or not node.args:
            return False
        viewed = viewed or _is_view(node)
        node = node.args[0]
    return False


def from_scores(node, modules: dict, ndim: int) -> bool:
    """``node`` is a softmax's input that comes from ``q @ k^T`` (through scaling, masks)."""
    for _ in range(_MAX_STEPS):
        if not isinstance(node, torch.fx.Node):
            return False
        if node_has_trait(node, "matmul"):
            return True
        if not _passes(node, modules) or not node.args:
            return False
        node = node.args[0]
    return False


HEAD_DIM = "head dim contracted between query and key (and it sets the softmax scale)"
KEYS = "key positions of attention (the softmax runs over them)"
