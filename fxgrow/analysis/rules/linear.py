"""Linear maps, matrix products and embeddings.

* Linear ``y = x W^T + b``, W ``[out, in]``: the last axis of x is contracted with W's columns
  (consumer: divided by the replication count), W's rows produce the output space.
* Matrix products (matmul, bmm, mm, einsum): contracted axes of the operands couple.  The
  contraction is exact under replication if one operand is a parameter whose slices are
  divided; between two activations, the student multiplies one of them by the shares of the
  copies (``analysis/contraction.py``).  Attention's two products keep their head dim and key
  positions blocked as structure.  Batch axes broadcast like elementwise ops.
* Embedding ``W[ids]``: W's columns produce the output space; its rows are indexed by ids and
  never grow.
"""

from __future__ import annotations

import operator
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import PRODUCE, RuleContext, RuleError
from ..contraction import scale_operand
from ..layout import Layout
from ..values import TensorInfo
from . import attention_pattern
from .registry import rule


def _produce(cx: RuleContext, ref, axis: int) -> None:
    info = cx.value(ref)
    if isinstance(info, TensorInfo) and cx.spaces.is_fixed(info.layouts[axis]):
        return  # a size-1 axis read through get_attr is fixed: it produces no space
    cx.produce(ref, axis)


def contract(cx: RuleContext, operands, layout: Layout, attention: str | None = None) -> None:
    """``operands``: (arg, axis) pairs contracted together along ``layout``.  One operand that
    is a parameter takes the division; with none, a channel space here is blocked (as
    structure, with the reason ``attention``, for the two products of attention) unless one
    activation operand can take a share scale in the student (``scale_operand``)."""
    for k, (ref, axis) in enumerate(operands):
        if cx._param_source(ref, axis) is not None:
            info = cx.value(ref)
            if isinstance(info, TensorInfo) and cx.spaces.is_fixed(info.layouts[axis]):
                return  # a size-1 axis read through get_attr is fixed: nothing to divide
            others = [o for j, o in enumerate(operands) if j != k]
            cx.consume(ref, axis, layout, others[0] if len(others) == 1 else None)
            return
    if attention is not None:
        cx.block(layout, attention, "structure")
        return
    if scale_operand(cx, operands, layout):
        return
    cx.block(
        layout, "contraction between two activations over this axis is not preserved by replication"
    )


@rule(nn.Linear)
def linear_module(cx: RuleContext):
    """nn.Linear: in-features consumed, out-features produced, other axes pass through."""
    x = cx.tensor(cx.arg(0))
    cx.unify(
        x.layouts[-1],
        cx.module_consume("weight", 1, (cx.arg(0), x.ndim - 1)),
        "input features of a Linear",
    )
    out = cx.module_param_required("weight", 0, PRODUCE)
    b = cx.module_param("bias", 0, PRODUCE)
    if b is not None:
        cx.unify(out, b)
    cx.size_attr("in_features", x.layouts[-1])
    cx.size_attr("out_features", out)
    return cx.out(x.layouts[:-1] + (out,))


@rule(F.linear, aten=("linear.default",))
@rule(F.linear, aten=("linear.default",), traits=("affine",))
def linear_function(cx: RuleContext):
    """F.linear(x, W, b): as nn.Linear, with W and b read from the graph."""
    x = cx.tensor(cx.arg(0, "input"))
    wref = cx.arg(1, "weight")
    w = cx.tensor(wref)
    cx.unify(x.layouts[-1], w.layouts[1], "input features of a linear")
    contract(cx, [(wref, 1), (cx.arg(0, "input"), x.ndim - 1)], w.layouts[1])
    _produce(cx, wref, 0)
    bref = cx.arg(2, "bias", None)
    if bref is not None:
        cx.unify(w.layouts[0], cx.tensor(bref).layouts[0])
        _produce(cx, bref, 0)
    return cx.out(x.layouts[:-1] + (w.layouts[0],))


def _broadcast_batch(cx: RuleContext, a: tuple, b: tuple, shape: tuple) -> tuple:
    out = []
    for k in range(1, len(shape) + 1):
        n = shape[-k]
        along = []
        for lays in (a, b):
            if len(lays) >= k:
                lay = lays[-k]
                if cx.spaces.size(lay) == n:
                    along.append(lay)
                else:
                    cx.block(lay, "broadcast against a wider axis: must stay of size 1")
        for other in along[1:]:
            cx.unify(along[0], other, "batch axes of a matrix product")
        out.append(along[0] if along else cx.fixed(n, "broadcast batch axis"))
    return tuple(reversed(out))


@rule(
    torch.matmul,
    operator.matmul,
    torch.bmm,
    torch.mm,
    "matmul",
    "bmm",
    "mm",
    "__matmul__",
    aten=("matmul.default", "mm.default", "bmm.default"),
)
@rule(
    torch.matmul, operator.matmul, "matmul", aten=("matmul.default", "bmm.default"), traits="matmul"
)
def matmul(cx: RuleContext):
    """a @ b: a's last axis and b's second-to-last are contracted; batch axes broadcast."""
    aref, bref = cx.arg(0), cx.arg(1)
    a, b = cx.tensor(aref), cx.tensor(bref)
    if a.ndim == 0 or b.ndim == 0:
        raise RuleError("matmul of a 0-d tensor")
    one = cx.fixed(1, "vector operand")
    al = ((one,) + a.layouts) if a.ndim == 1 else a.layouts
    bl = (b.layouts + (one,)) if b.ndim == 1 else b.layouts
    cx.unify(al[-1], bl[-2], "contracted axes of a matrix product")
    contract(
        cx,
        [(bref, b.ndim - 2 if b.ndim > 1 else 0), (aref, a.ndim - 1)],
        al[-1],
        _attention_role(cx, aref, a.ndim, b.ndim),
    )
    if b.ndim > 1:
        _produce(cx, bref, b.ndim - 1)
    if a.ndim > 1:
        _produce(cx, aref, a.ndim - 2)
    batch_shape = torch.broadcast_shapes(
        tuple(cx.spaces.size(x) for x in al[:-2]), tuple(cx.spaces.size(x) for x in bl[:-2])
    )
    batch = _broadcast_batch(cx, al[:-2], bl[:-2], batch_shape)
    out = batch + ((al[-2],) if a.ndim > 1 else ()) + ((bl[-1],) if b.ndim > 1 else ())
    return cx.out(out)


def _attention_role(
    cx: RuleContext,
    aref,
    a_ndim: int,
    b_ndim: int,
    out_ndim: int | None = None,
    a_last: bool = True,
) -> str | None:
    """Why the contraction is blocked if this is one of attention's two products:
    ``q @ k^T`` (its result goes to a softmax over the last axis) or ``attn @ v`` (``a`` comes
    from one and is contracted over its last axis)."""
    if a_ndim < 2 or b_ndim < 2:
        return None
    nd = out_ndim or max(a_ndim, b_ndim)
    if attention_pattern.feeds_softmax(cx.node, cx.state.modules, nd):
        return attention_pattern.HEAD_DIM
    if a_last and attention_pattern.from_softmax(aref, cx.state.modules, a_ndim):
        return attention_pattern.KEYS
    return None


@rule(torch.addmm, "addmm", aten=("addmm.default",))
@rule(torch.addmm, aten=("addmm.default",), traits=("bias_plus_product",))
def addmm(cx: RuleContext):
    """addmm(bias, a, b) = bias + a @ b (2-D); the bias broadcasts over rows."""
    biasref, aref, bref = cx.arg(0), cx.arg(1), cx.arg(2)
    a, b = cx.tensor(aref), cx.tensor(bref)
    cx.unify(a.layouts[1], b.layouts[0], "contracted axes of a matrix product")
    contract(cx, [(bref, 0), (aref, 1)], a.layouts[1])
    _produce(cx, bref, 1)
    bias = cx.tensor(biasref)
    if bias.shape[-1] == b.shape[1]:
        cx.unify(bias.layouts[-1], b.layouts[1], "bias of addmm")
    else:
        cx.block(bias.layouts[-1], "broadcast against a wider axis: must stay of size 1")
    if bias.ndim == 2:
        if bias.shape[0] == a.shape[0]:
            cx.unify(bias.layouts[0], a.layouts[0])
        else:
            cx.block(bias.layouts[0], "broadcast against a wider axis: must stay of size 1")
    return cx.out((a.layouts[0], b.layouts[1]))


_EINSUM = re.compile(r"^[a-zA-Z,]*->[a-zA-Z]*$")


@rule(torch.einsum, aten=("einsum.default",), traits=("matmul",))
def einsum(cx: RuleContext):
    """einsum: an index letter names one space in every operand it appears in; letters absent
    from the output are contracted (one parameter operand takes the division)."""
    eq = cx.concrete(cx.arg(0)).replace(" ", "")
    refs = list(cx.node.args[1:])
    if len(refs) == 1 and isinstance(refs[0], (list, tuple)):
        refs = list(refs[0])
    if not _EINSUM.match(eq):
        raise RuleError(f"einsum equation {eq!r} (ellipsis or implicit output) is not supported")
    ins, out = eq.split("->")
    specs = ins.split(",")
    infos = [cx.tensor(r) for r in refs]
    seen: dict[str, Layout] = {}
    where: dict[str, list] = {}
    for spec, info, ref in zip(specs, infos, refs):
        for axis, letter in enumerate(spec):
            lay = info.layouts[axis]
            if letter in seen:
                cx.unify(seen[letter], lay, f"einsum index {letter}")
            else:
                seen[letter] = lay
            where.setdefault(letter, []).append((ref, axis))
    for letter, uses in where.items():
        if letter not in out:
            if len(uses) == 1:
                cx.block(seen[letter], "summed over (a reduction over this axis)")
            else:
                role = None
                if len(refs) == 2 and len(uses) == 2:
                    role = _attention_role(
                        cx, refs[0], len(specs[0]), len(specs[1]), len(out), specs[0][-1] == letter
                    )
                contract(cx, uses, seen[letter], role)
        else:
            for ref, axis in uses:
                _produce(cx, ref, axis)
    return cx.out(tuple(seen[letter] for letter in out))


@rule(nn.Embedding)
def embedding_module(cx: RuleContext):
    """nn.Embedding: W[ids]; W's columns produce the output space."""
    if cx.module_as(nn.Embedding).max_norm is not None:
        raise RuleError("max_norm renormalises over the embedding dimension")
    ids = cx.tensor(cx.arg(0))
    cx.block(
        cx.module_param_required("weight", 0, None), "vocabulary axis, indexed by ids", "structure"
    )
    out = cx.module_param_required("weight", 1, PRODUCE)
    cx.size_attr("embedding_dim", out)
    return cx.out(ids.layouts + (out,))


@rule(F.embedding, traits=("table_lookup",))
def embedding_function(cx: RuleContext):
    """F.embedding(ids, W): as nn.Embedding."""
    if cx.arg(3, "max_norm", None) is not None:
        raise RuleError("max_norm renormalises over the embedding dimension")
    ids = cx.tensor(cx.arg(0, "input"))
    wref = cx.arg(1, "weight")
    w = cx.tensor(wref)
    cx.block(w.layouts[0], "vocabulary axis, indexed by ids", "structure")
    _produce(cx, wref, 1)
    return cx.out(ids.layouts + (w.layouts[1],))
