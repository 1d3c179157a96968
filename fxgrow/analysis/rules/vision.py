"""Rules for torchvision functions that fx keeps as calls (torchvision wraps them)."""

from __future__ import annotations

from typing import cast

import torch
import torch.fx

from ..arguments import with_argument
from ..context import RuleContext
from ..values import TensorInfo
from .common import broadcast, same_layouts
from .registry import rule

try:
    from torchvision.ops import stochastic_depth as _stochastic_depth
except Exception:  # torchvision absent
    _stochastic_depth = None

if _stochastic_depth is not None:

    @rule(_stochastic_depth, traits=("keeps_zero",))
    def stochastic_depth(cx: RuleContext):
        """torchvision stochastic_depth: drops whole samples (mode "row") or the whole batch;
        the mask is shared by every channel, so replicas stay equal: pass-through."""
        return same_layouts(cx)


try:
    from torchvision.models import swin_transformer as _swin
    from torchvision.models.video import swin_transformer as _swin3d
except Exception:  # torchvision absent
    _swin = _swin3d = None


def _heads_rows(cx: RuleContext, rows, head_dim: int, what: str):
    """Rows [q | k | v] of a fused projection: the three parts share one map; each part is
    heads x head_dim with the head dim blocked.  Returns (heads, heads x head_dim)."""
    n = cx.spaces.size(rows)
    pieces = cx.spaces.cut(rows, [n // 3, 2 * n // 3], cx.blocker(f"{what} q/k/v rows"))
    for p in pieces[1:]:
        cx.unify(pieces[0], p, "query, key and value heads correspond")
    heads, dim = cx.spaces.split(pieces[0], head_dim, cx.blocker(f"{what} heads"))
    cx.block(
        dim,
        "head dim contracted between query and key (and it sets the softmax scale)",
        "structure",
    )
    return heads, cx.spaces.merge(heads, dim)


if _swin is not None:
    from ..values import TensorInfo

    @rule(_swin.shifted_window_attention, _swin3d.shifted_window_attention_3d)
    def shifted_window_attention(cx: RuleContext):
        """torchvision Swin window attention (input [B, H, W, C] or [B, T, H, W, C] for the video
        Swin, qkv_weight [3C, C], proj_weight [C, C], relative position bias [1, heads, N, N]):
        heads grow whole; C = heads x head_dim for the input, the attention and the output alike;
        ``num_heads`` is rewritten.  (Argument 11 is ``logit_scale`` in 2-d, ``training`` in 3-d:
        only a tensor there is a per-head scale.)"""
        x = cx.tensor(cx.arg(0, "input"))
        qkv_w, proj_w = cx.arg(1, "qkv_weight"), cx.arg(2, "proj_weight")
        H = cx.concrete(cx.arg(5, "num_heads"))
        C = x.shape[-1]
        rows = cx.tensor(qkv_w).layouts[0]
        heads, inner = _heads_rows(cx, rows, C // H, "window attention")
        cx.unify(x.layouts[-1], cx.tensor(qkv_w).layouts[1], "input of the qkv projection")
        cx.consume(qkv_w, 1, x.layouts[-1], (cx.arg(0, "input"), x.ndim - 1))
        cx.produce(qkv_w, 0)
        cx.unify(x.layouts[-1], inner, "window attention: C = num_heads x head_dim")
        pw = cx.tensor(proj_w)
        cx.unify(pw.layouts[1], inner, "output projection reads whole heads")
        cx.consume(proj_w, 1, pw.layouts[1])
        cx.produce(proj_w, 0)
        cx.unify(pw.layouts[0], inner, "window attention output has C channels")
        bias = cx.value(cx.arg(3, "relative_position_bias"))
        if isinstance(bias, TensorInfo):
            cx.unify(bias.layouts[1], heads, "relative position bias per head")
        for i, name, lay in ((9, "qkv_bias", rows), (10, "proj_bias", pw.layouts[0])):
            b = cx.value(cx.arg(i, name, None))
            if isinstance(b, TensorInfo):
                cx.unify(b.layouts[0], lay)
        scale = cx.value(cx.arg(11, "logit_scale", None))
        if isinstance(scale, TensorInfo):
            cx.unify(scale.layouts[0], heads, "logit scale per head")
        cx.sizes_handled(cx.value(cx.arg(5, "num_heads")))

        def new_args(size, args, kwargs):
            return with_argument(args, kwargs, 5, "num_heads", size(heads))

        cx.rewrite_args(new_args, heads)
        for ref in (qkv_w, proj_w):
            if isinstance(ref, torch.fx.Node) and ref.op == "get_attr":
                module = cast(str, ref.target).rpartition(".")[0]  # get_attr: a path
                lin = cx.state.modules.get(module)
                if isinstance(lin, torch.nn.Linear):
                    w = cx.tensor(ref)
                    cx.size_attr("in_features", w.layouts[1], module=module)
                    cx.size_attr("out_features", w.layouts[0], module=module)
        owner = cx.state.modules.get(
            cx.node.meta.get("nn_module_stack", {})
            and list(cx.node.meta["nn_module_stack"].values())[-1][0]
        )
        if owner is not None and hasattr(owner, "num_heads"):
            path = list(cx.node.meta["nn_module_stack"].values())[-1][0]
            cx.set_attr("num_heads", lambda size: size(heads), heads, module=path)
        return cx.out(x.layouts[:-1] + (pw.layouts[0],))

    @rule(_swin._get_relative_position_bias, _swin3d._get_relative_position_bias)
    def relative_position_bias(cx: RuleContext):
        """Bias table [(2W-1)^d, heads] indexed by relative positions -> [1, heads, N, N] (2-d
        and video Swin)."""
        table = cx.tensor(cx.arg(0))
        cx.block(table.layouts[0], "relative positions, indexed", "structure")
        shape = cx.out_shape()
        return cx.out(
            (
                cx.fixed(1, "batch axis"),
                table.layouts[1],
                cx.fixed(shape[2], "window positions"),
                cx.fixed(shape[3], "window positions"),
            )
        )

    @rule(_swin._patch_merging_pad)
    def patch_merging(cx: RuleContext):
        """Swin patch merging: the four 2x2 neighbours concatenated on channels -> [C, C, C, C]
        (one space four times); the spatial axes halve (fixed)."""
        x = cx.tensor(cx.arg(0))
        for lay in x.layouts[-3:-1]:
            cx.block(lay, "spatial axis read by patch merging: its size is fixed")
        shape = cx.out_shape()
        c = x.layouts[-1]
        return cx.out(
            x.layouts[:-3]
            + (
                cx.fixed(shape[-3], "spatial axis"),
                cx.fixed(shape[-2], "spatial axis"),
                c + c + c + c,
            )
        )


try:
    from torchvision.models.video import mvit as _mvit
except Exception:  # torchvision absent
    _mvit = None

if _mvit is not None and hasattr(_mvit, "_unsqueeze"):

    @rule(_mvit._unsqueeze)
    def mvit_unsqueeze(cx: RuleContext):
        """torchvision MViT's ``_unsqueeze(x, target_dim, expand_dim)`` -> ``(x', x.dim())``:
        x with a new size-1 axis at ``expand_dim`` when it has one axis less than
        ``target_dim`` (else x itself), and x's rank, which no width changes."""
        x = cx.tensor(cx.arg(0))
        target, at = cx.concrete(cx.arg(1, "target_dim")), cx.concrete(cx.arg(2, "expand_dim"))
        layouts = list(x.layouts)
        if x.ndim == target - 1:
            layouts.insert(at % (x.ndim + 1), cx.fixed(1, "axis added by unsqueeze"))
        out = cx.example()[0]
        return (TensorInfo(tuple(out.shape), tuple(layouts)), x.ndim)

    @rule(_mvit._squeeze)
    def mvit_squeeze(cx: RuleContext):
        """torchvision MViT's ``_squeeze(x, target_dim, expand_dim, tensor_dim)``: drops the
        size-1 axis ``expand_dim`` that ``_unsqueeze`` added (when ``tensor_dim`` says it did)."""
        x = cx.tensor(cx.arg(0))
        target, at = cx.concrete(cx.arg(1, "target_dim")), cx.concrete(cx.arg(2, "expand_dim"))
        layouts = list(x.layouts)
        if cx.concrete(cx.arg(3, "tensor_dim")) == target - 1:
            d = x.dim(at)
            cx.block(layouts[d], "size-1 axis removed by squeeze")
            del layouts[d]
        return cx.out(layouts)

    @rule(_mvit._add_shortcut)
    def mvit_add_shortcut(cx: RuleContext):
        """torchvision MViT's ``_add_shortcut(x, shortcut, with_cls)``: ``x += shortcut`` in
        place (all tokens, or all but the class token): element-wise, x and shortcut share
        every axis's space; the token axis is positions (fixed anyway)."""
        return broadcast(cx, (cx.arg(0), cx.arg(1)))

    @rule(_mvit._add_rel_pos)
    def mvit_add_rel_pos(cx: RuleContext):
        """torchvision MViT's ``_add_rel_pos(attn [B, heads, Nq, Nk], q [B, heads, Nq, dim],
        q_thw, k_thw, rel_pos_h/w/t [2n - 1, dim])``: per head, attention logits plus q's head
        vectors contracted with relative-position tables over ``dim``.  Heads pass through
        (attn and q share them); the head dim is contracted with the tables (structure, as in
        any attention); token axes are positions."""
        attn, q = cx.tensor(cx.arg(0, "attn")), cx.tensor(cx.arg(1, "q"))
        cx.unify(attn.layouts[0], q.layouts[0], "batch axis")
        cx.unify(attn.layouts[1], q.layouts[1], "heads of the logits and of the queries")
        cx.block(q.layouts[3], "head dim contracted with relative-position tables", "structure")
        for i, name in ((4, "rel_pos_h"), (5, "rel_pos_w"), (6, "rel_pos_t")):
            table = cx.value(cx.arg(i, name))
            if isinstance(table, TensorInfo):
                cx.block(table.layouts[0], "relative positions, indexed", "structure")
                cx.unify(table.layouts[1], q.layouts[3], "head dim of the position tables")
        for lay in (*attn.layouts[2:], q.layouts[2]):
            cx.block(lay, "token positions", "structure")
        return cx.out(attn.layouts)
