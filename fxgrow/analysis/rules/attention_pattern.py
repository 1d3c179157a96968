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

import operator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

_SOFTMAX_FN = (F.softmax, torch.softmax)
_SOFTMAX_MOD = (nn.Softmax,)
# ops between the scores and the softmax, or the softmax and attn @ v, that keep positions
_PASS_FN = {
    operator.mul,
    operator.truediv,
    operator.add,
    operator.sub,
    torch.mul,
    torch.div,
    torch.add,
    torch.sub,
    torch.masked_fill,
    F.dropout,
}
_PASS_METHOD = {
    "mul",
    "div",
    "add",
    "sub",
    "mul_",
    "div_",
    "add_",
    "sub_",
    "masked_fill",
    "masked_fill_",
    "float",
    "to",
    "type_as",
    "half",
    "bfloat16",
    "contiguous",
}
_PASS_MOD = (nn.Dropout, nn.Identity)
# views that regroup the leading axes (Swin's mask per window: [B nW, H, N, N] <-> [B, nW, H,
# N, N]); past one, only a softmax over dim=-1 is known to be over the keys
_VIEW_METHOD = {"view", "reshape"}
_MAX_STEPS = 6
# the same ops in exported (ATen) graphs, by overload name
_ATEN_SOFTMAX = {"softmax", "_softmax"}
_ATEN_PASS = {
    "mul",
    "div",
    "add",
    "sub",
    "masked_fill",
    "dropout",
    "native_dropout",
    "to",
    "_to_copy",
    "clone",
    "contiguous",
    "type_as",
    "alias",
}
_ATEN_VIEW = {"view", "reshape", "_unsafe_view"}
_ATEN_MATMUL = {"matmul", "bmm", "einsum"}


def _aten(node: torch.fx.Node) -> str | None:
    """``softmax`` for ``aten.softmax.int`` (None for anything but an ATen overload)."""
    t = node.target
    if node.op == "call_function" and isinstance(t, torch._ops.OpOverload):
        return t._schema.name.split("::")[-1]
    return None


def _is_view(node: torch.fx.Node) -> bool:
    return (
        (node.op == "call_method" and node.target in _VIEW_METHOD)
        or (node.op == "call_function" and node.target is torch.reshape)
        or _aten(node) in _ATEN_VIEW
    )


def _passes(node: torch.fx.Node, modules: dict) -> bool:
    if _is_view(node) or _aten(node) in _ATEN_PASS:
        return True
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return node.target in _PASS_FN or name == "maybe_add_mask"
    if node.op == "call_method":
        return node.target in _PASS_METHOD
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _PASS_MOD)
    return False


def _softmax_last(node: torch.fx.Node, modules: dict, ndim: int, viewed: bool = False) -> bool:
    """A softmax over the last axis of a ``ndim``-d tensor (``viewed``: of a view of it, so
    only ``dim=-1`` says so)."""
    if node.op == "call_module" and isinstance(modules.get(node.target), _SOFTMAX_MOD):
        d = modules[node.target].dim
    elif (
        (node.op == "call_function" and node.target in _SOFTMAX_FN)
        or (node.op == "call_method" and node.target == "softmax")
        or _aten(node) in _ATEN_SOFTMAX
    ):
        d = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
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
        if (
            (
                node.op == "call_function"
                and node.target in (operator.matmul, torch.matmul, torch.einsum)
            )
            or (node.op == "call_method" and node.target == "matmul")
            or _aten(node) in _ATEN_MATMUL
        ):
            return True
        if not _passes(node, modules) or not node.args:
            return False
        node = node.args[0]
    return False


HEAD_DIM = "head dim contracted between query and key (and it sets the softmax scale)"
KEYS = "key positions of attention (the softmax runs over them)"
