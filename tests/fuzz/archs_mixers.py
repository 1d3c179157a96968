"""More fuzzer vocabulary (registered into ``archs.OPS``): what the first vocabulary missed.

* ``shape_mix``: token mixers whose reshape takes its sizes from another tensor's ``.shape``
  (``b, c, h, w = x.shape; ... lin_hw(t).reshape(b, c, h, w)``), with ``-1``, with size
  arithmetic (``c // g``), with ``view(x.shape)``; optionally a softmax over the mixed
  channels, so the two spaces differ in what may grow;
* ``inplace``: in-place updates of a fresh tensor (``mul_``, ``add_``, ``+=``, ``relu_``,
  ``masked_fill_``), their results used; the forms that discard the result and rely on the
  side effect alone (``*_discard``, as in ``x.add_(pos)``) are not drawn yet: the rewrite's
  dead-code elimination drops them (issue 11, item 2, fixed separately) --
  ``tests/regressions/test_sizes_across_spaces.py`` has the case;
* ``gather``: tensor-indexed gathers on positions (``x[:, :, idx]``, ``index_select``) and a
  table of vectors gathered by an index buffer and added (positional lookups);
* ``rel_attn``: hand-written attention with a relative-position bias table gathered by an
  index buffer, heads merged back with the size read from ``x.shape``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import strategies as st

from .archs import Op, Step, _divisors, register


class _Index(nn.Module):
    """An integer index buffer (and optionally a table it reads)."""

    def __init__(self, index: list[int], table: tuple | None = None) -> None:
        super().__init__()
        self.register_buffer("index", torch.tensor(index, dtype=torch.long))
        self.table = nn.Parameter(torch.randn(*table) * 0.5) if table else None


@register
class ShapeMix(Op):
    name = "shape_mix"
    kinds = ("map", "seq")

    def draw(self, draw, pool, src):
        m = pool[src]
        forms = (
            ["issue", "minus_one", "arith", "view_shape"]
            if m.kind == "map"
            else ["issue", "minus_one", "view_shape"]
        )
        p = {"form": draw(st.sampled_from(forms)), "block": draw(st.booleans())}
        if p["form"] == "arith":
            p["g"] = draw(st.sampled_from(_divisors(m.c)))
        return Step(self.name, (src,), p)

    def build(self, pool, s):
        m = pool[s.inputs[0]]
        n = m.shape[1] * m.shape[2] if m.kind == "map" else m.shape[0]
        return {"lin_c": nn.Linear(m.c, m.c), "lin_n": nn.Linear(n, n)}

    def run(self, mods, xs, p, ms):
        x, form = xs[0], p["form"]
        if ms[0].kind == "map":
            b, c, h, w = x.shape
            t = mods["lin_c"](x.flatten(2).transpose(1, 2))  # [B, HW, C]
        else:
            b, c = x.shape[0], x.shape[2]
            t = mods["lin_c"](x)  # [B, L, C]
        if p["block"]:
            t = t.softmax(-1)
        t = mods["lin_n"](t.transpose(1, 2))  # [B, C, positions]
        if ms[0].kind == "seq":
            t = t.transpose(1, 2)  # [B, L, C]
            if form == "issue":
                return [t.reshape(b, x.shape[1], c)]
            if form == "minus_one":
                return [t.reshape(b, -1, c)]
            return [t.view(x.shape)]
        if form == "issue":
            return [t.reshape(b, c, h, w)]
        if form == "minus_one":
            return [t.reshape(b, c, -1).reshape(b, -1, h, w)]
        if form == "arith":
            g = p["g"]
            return [t.reshape(b, c // g, g * h, w).reshape(b, c, h, w)]
        return [t.view(x.shape)]


@register
class Inplace(Op):
    name = "inplace"
    FORMS = ("mul_", "add_", "iadd", "relu_", "masked_fill_")

    def draw(self, draw, pool, src):
        return Step(
            self.name,
            (src,),
            {"forms": draw(st.lists(st.sampled_from(self.FORMS), min_size=1, max_size=3))},
        )

    def run(self, mods, xs, p, ms):
        y = xs[0] * 1.5  # a fresh tensor: the pool entry itself is never changed
        for f in p["forms"]:
            if f == "mul_":
                y = y.mul_(0.5)
            elif f == "add_":
                y = y.add_(xs[0])
            elif f == "iadd":
                y += 1.0
            elif f == "relu_":
                y = y.relu_()
            elif f == "masked_fill_":
                y = y.masked_fill_(y > 1.0, 1.0)
            elif f == "relu_discard":
                y.relu_()
            else:  # mul_discard
                y.mul_(0.5)
        return [y]


@register
class Gather(Op):
    name = "gather"
    kinds = ("map", "seq")

    def draw(self, draw, pool, src):
        m = pool[src]
        n = m.shape[1] if m.kind == "map" else m.shape[0]  # H, or L
        forms = ["getitem", "index_select"] + (["table"] if m.kind == "seq" else [])
        index = draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))
        return Step(
            self.name,
            (src,),
            {"form": draw(st.sampled_from(forms)), "index": index, "entries": n + 1},
        )

    def build(self, pool, s):
        p, m = s.params, pool[s.inputs[0]]
        table = (p["entries"], m.c) if p["form"] == "table" else None
        return {"g": _Index(p["index"], table)}

    def run(self, mods, xs, p, ms):
        x, g = xs[0], mods["g"]
        axis = 2 if ms[0].kind == "map" else 1
        if p["form"] == "table":
            return [x + g.table[g.index]]
        if p["form"] == "index_select":
            return [torch.index_select(x, axis, g.index)]
        return [x[:, :, g.index] if axis == 2 else x[:, g.index]]


@register
class RelAttn(Op):
    name = "rel_attn"
    kinds = ("seq",)

    def draw(self, draw, pool, src):
        d = pool[src].c
        return Step(
            self.name,
            (src,),
            {"heads": draw(st.sampled_from(_divisors(d))), "scale_first": draw(st.booleans())},
        )

    def build(self, pool, s):
        L, d = pool[s.inputs[0]].shape
        h = s.params["heads"]
        rel = [i - j + L - 1 for i in range(L) for j in range(L)]
        return {
            "qkv": nn.Linear(d, 3 * d),
            "proj": nn.Linear(d, d),
            "bias": _Index(rel, (2 * L - 1, h)),
            "drop": nn.Dropout(0.0),
        }

    def run(self, mods, xs, p, ms):
        x = xs[0]
        B, N, C = x.shape
        h = p["heads"]
        q, k, v = mods["qkv"](x).reshape(B, N, 3, h, -1).permute(2, 0, 3, 1, 4).unbind(0)
        s = (C // h) ** -0.5
        a = (q * s) @ k.transpose(-2, -1) if p["scale_first"] else q @ k.transpose(-2, -1) * s
        bias = mods["bias"].table[mods["bias"].index.view(-1)].view(N, N, -1)
        a = a + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        a = mods["drop"](a.softmax(dim=-1))
        return [mods["proj"]((a @ v).transpose(1, 2).reshape(B, N, C))]
