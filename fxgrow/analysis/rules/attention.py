"""Attention.

softmax(q k^T * scale) v over heads:

* q and k are contracted over the head dim E: two activations, so replication there is not
  exact (and the default scale 1/sqrt(E) would change): E is blocked.
* the softmax runs over the key positions S: S is blocked (tokens are fixed anyway).
* heads are batch axes: q, k and v share them, and heads grow whole (a head's units are
  replicated together, so the output projection divides whole heads).  With grouped-query
  attention (``enable_gqa``) query head h reads key/value head h // r, so the query heads are
  the key/value heads times a fixed factor r: whole KV groups are replicated.
* nn.MultiheadAttention: in_proj rows are [q | k | v], each heads x head_dim; embed_dim,
  num_heads x head_dim and the output size must stay equal, so the model's embedding space is
  the heads space (it grows by whole heads).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..context import CONSUME, PRODUCE, RuleContext, RuleError
from ..values import TensorInfo
from .registry import rule


def _unify_batch(cx: RuleContext, lays: list[tuple], shapes: list[tuple], out_batch: tuple):
    """Broadcast the leading (batch/head) axes of several operands."""
    result = []
    for k in range(1, len(out_batch) + 1):
        n = out_batch[-k]
        along = []
        for lay, shape in zip(lays, shapes):
            if len(lay) >= k:
                if shape[-k] == n:
                    along.append(lay[-k])
                else:
                    cx.block(lay[-k], "broadcast against a wider axis: must stay of size 1")
        for other in along[1:]:
            cx.unify(along[0], other, "batch/head axes of attention")
        result.append(along[0] if along else cx.fixed(n, "broadcast axis"))
    return tuple(reversed(result))


@rule(F.scaled_dot_product_attention, aten=("scaled_dot_product_attention.default",))
def sdpa(cx: RuleContext):
    """scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale,
    enable_gqa): see the module docstring."""
    q, k, v = (cx.tensor(cx.arg(i, n)) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    gqa = bool(cx.concrete(cx.arg(7, "enable_gqa", False)))
    cx.unify(q.layouts[-1], k.layouts[-1], "query/key head dim")
    cx.block(
        q.layouts[-1],
        "head dim contracted between query and key (and it sets the softmax scale)",
        "structure",
    )
    cx.unify(k.layouts[-2], v.layouts[-2], "key/value positions")
    cx.block(k.layouts[-2], "softmax over key positions", "structure")
    qb, kb, vb = list(q.layouts[:-2]), list(k.layouts[:-2]), list(v.layouts[:-2])
    qs, ks, vs = list(q.shape[:-2]), list(k.shape[:-2]), list(v.shape[:-2])
    if gqa and q.ndim >= 3 and qs[-1] != ks[-1]:
        r = qs[-1] // ks[-1]
        cx.unify(
            qb[-1],
            cx.spaces.merge(kb[-1], cx.fixed(r, "query heads per key/value head")),
            "grouped-query heads",
        )
        cx.unify(kb[-1], vb[-1], "key/value heads")
        qb, qs = qb[:-1], qs[:-1]
        heads = [q.layouts[-3]]
        kb, ks, vb, vs = kb[:-1], ks[:-1], vb[:-1], vs[:-1]
    else:
        heads = []
    out_shape = cx.out_shape()
    batch_shape = out_shape[:-2] if not heads else out_shape[:-3]
    batch = _unify_batch(
        cx, [tuple(qb), tuple(kb), tuple(vb)], [tuple(qs), tuple(ks), tuple(vs)], batch_shape
    )
    mask = cx.value(cx.arg(3, "attn_mask", None))
    if isinstance(mask, TensorInfo):
        full_q = batch + tuple(heads) + (q.layouts[-2],)
        target = full_q + (k.layouts[-2],)
        shape = tuple(out_shape[:-1]) + (k.shape[-2],)
        for j in range(1, mask.ndim + 1):
            if mask.shape[-j] == shape[-j]:
                cx.unify(mask.layouts[-j], target[-j], "attention mask axes")
            else:
                cx.block(mask.layouts[-j], "broadcast against a wider axis: must stay of size 1")
    return cx.out(batch + tuple(heads) + (q.layouts[-2], v.layouts[-1]))


@rule(nn.MultiheadAttention)
def multihead_attention(cx: RuleContext):
    """nn.MultiheadAttention: see the module docstring."""
    m = cx.module_as(nn.MultiheadAttention)
    if not m._qkv_same_embed_dim:
        raise RuleError("MultiheadAttention with kdim/vdim different from embed_dim")
    q, k, v = (cx.tensor(cx.arg(i, n)) for i, n in ((0, "query"), (1, "key"), (2, "value")))
    # the softmax runs over the key positions: replicated keys would weigh twice
    seq = 1 if m.batch_first and k.ndim == 3 else 0
    cx.unify(k.layouts[seq], v.layouts[seq], "key/value positions")
    cx.block(k.layouts[seq], "softmax over key positions", "structure")
    E = m.embed_dim
    rows = cx.module_param_required("in_proj_weight", 0, PRODUCE)
    pieces = cx.spaces.cut(rows, [E, 2 * E], cx.blocker("q/k/v rows"))
    for p in pieces[1:]:
        cx.unify(pieces[0], p, "query, key and value heads correspond")
    heads, head_dim = cx.spaces.split(pieces[0], m.head_dim, cx.blocker("heads"))
    cx.block(head_dim, "head dim of nn.MultiheadAttention (fixes the softmax scale)", "structure")
    inner = cx.spaces.merge(heads, head_dim)
    cols = cx.module_param_required("in_proj_weight", 1, CONSUME)
    for t in (q, k, v):
        cx.unify(t.layouts[-1], cols, "embedding of nn.MultiheadAttention")
    if m.in_proj_bias is not None:
        cx.unify(cx.module_param_required("in_proj_bias", 0, PRODUCE), rows)
    for name in ("bias_k", "bias_v"):
        if getattr(m, name, None) is not None:
            cx.unify(cx.module_param_required(name, 2, PRODUCE), inner)
    out_cols = cx.param(f"{cx.node.target}.out_proj.weight", 1, CONSUME)
    cx.unify(out_cols, inner, "output projection reads whole heads")
    out = cx.param(f"{cx.node.target}.out_proj.weight", 0, PRODUCE)
    if m.out_proj.bias is not None:
        cx.unify(out, cx.param(f"{cx.node.target}.out_proj.bias", 0, PRODUCE))
    # embed_dim is one attribute for the input, the heads and the output: they stay equal
    cx.unify(cols, inner, "nn.MultiheadAttention: embed_dim = num_heads x head_dim")
    cx.unify(out, inner, "nn.MultiheadAttention: output size = embed_dim")
    cx.set_attr("embed_dim", lambda size: size(inner), inner)
    cx.set_attr("kdim", lambda size: size(inner), inner)
    cx.set_attr("vdim", lambda size: size(inner), inner)
    cx.set_attr("num_heads", lambda size: size(heads), heads)
    cx.set_attr("in_features", lambda size: size(inner), inner, module=f"{cx.node.target}.out_proj")
    cx.set_attr(
        "out_features", lambda size: size(inner), inner, module=f"{cx.node.target}.out_proj"
    )
    need_weights = cx.concrete(cx.arg(4, "need_weights", True))
    average = cx.concrete(cx.arg(6, "average_attn_weights", True))
    example = cx.example()
    out_info = TensorInfo(tuple(example[0].shape), q.layouts[:-1] + (out,))
    weights = None
    if need_weights and example[1] is not None:
        w = example[1]
        if not average:
            raise RuleError("per-head attention weights returned")
        cx.uniform(heads, "attention weights averaged over heads")
        weights = cx.info_for(w, "attention weights")
    return (out_info, weights)
