"""Random architectures for fuzzing fxgrow.

A model is drawn as a *program*: a list of op specs (:class:`Step`) over a pool of tensors.
The pool starts with the model input; each step reads pool entries and appends its results.
``FuzzNet(program)`` builds the ``nn.Module`` (one ``ModuleDict`` per step) whose ``forward``
replays the program -- plain Python over a fixed list, so ``torch.fx`` traces it.  Programs
are plain data (their ``repr`` is valid Python), so a shrunk failure can be pasted into a
regression test as is.

Pool entries have a kind and a shape without the batch axis:

* ``map``  [B, C, H, W]  (channels first)
* ``seq``  [B, L, D]     (tokens, channels last)
* ``vec``  [B, C]
* ``ids``  [B, L]        (token ids, the input of an embedding)

The op vocabulary is what fxgrow claims (plain, grouped, depthwise, functional and transposed
convs, linears over channels and across positions, functional linears and einsum,
BatchNorm / GroupNorm / LayerNorm, activations, residual adds and broadcast products, SE gates
[B,C,1,1], [B,1,H,W] masks and conditioning vectors, cat / split / chunk / slice / narrow with
swapped and repeated segments, flatten / view / reshape / permute / transpose, pooling,
upsampling, pixel and channel shuffles, repeat, attention with heads, nn.MultiheadAttention,
embeddings, tied weights, modules called twice, residual stages) plus ops it does not claim
(sums, unbiased variances, softmax, cumsum and L2-normalisation over channels, an opaque
``torch.fx.wrap``-ed function).  docs/robustness.md has the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

MAX_C = 8  # channel widths are drawn in [1, MAX_C]
BATCH = 2


# -- an op fxgrow has no rule for ---------------------------------------------------------------
def fuzz_opaque(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mixes the channel axis; fx records it as one call fxgrow does not know."""
    return x * torch.sigmoid(x.mean(dim, keepdim=True))


torch.fx.wrap("fuzz_opaque")


# -- program data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Meta:
    """A pool entry: kind and shape without the batch axis (``hw`` for tokens of a map)."""

    kind: str
    shape: tuple
    hw: tuple | None = None

    @property
    def axis(self) -> int:
        """The channel axis in the batched tensor."""
        return 2 if self.kind == "seq" else 1

    @property
    def c(self) -> int:
        return self.shape[self.axis - 1]

    def with_c(self, c: int) -> Meta:
        s = list(self.shape)
        s[self.axis - 1] = c
        return Meta(self.kind, tuple(s), self.hw)


@dataclass
class Step:
    op: str
    inputs: tuple
    params: dict = field(default_factory=dict)


@dataclass
class Program:
    """``input``: ("map", C, H, W) or ("seq", L, D); ``outputs``: (pool index, head) pairs with
    head "linear" (global pool / token mean, then a Linear to 3 units) or "raw"."""

    input: tuple
    steps: list
    outputs: tuple
    dtype: str = "float64"
    seed: int = 0

    def metas(self) -> list[Meta]:
        pool = [input_meta(self.input)]
        for s in self.steps:
            pool.extend(OPS[s.op].meta(pool, s))
        return pool

    def describe(self) -> str:
        lines = [f"input {self.input}  dtype {self.dtype}  seed {self.seed}"]
        pool = [input_meta(self.input)]
        for k, s in enumerate(self.steps):
            new = OPS[s.op].meta(pool, s)
            first = len(pool)
            pool.extend(new)
            outs = ", ".join(f"#{first + j} {m.kind}{m.shape}" for j, m in enumerate(new))
            lines.append(f"  {k}: {s.op}{s.inputs} {s.params} -> {outs}")
        lines.append(f"  outputs {self.outputs}")
        return "\n".join(lines)


def input_meta(spec: tuple) -> Meta:
    kind, *shape = spec
    return Meta(kind, tuple(shape), tuple(shape[1:]) if kind == "map" else None)


def example_input(program: Program) -> torch.Tensor:
    g = torch.Generator().manual_seed(program.seed + 1)
    if program.input[0] == "ids":  # ("ids", L, vocabulary)
        return torch.randint(0, program.input[2], (BATCH, program.input[1]), generator=g)
    shape = (BATCH, *program.input[1:])
    return torch.randn(shape, generator=g, dtype=torch.float64).to(getattr(torch, program.dtype))


# -- op table -----------------------------------------------------------------------------------------
class Op:
    """An op: when it applies (``ok`` on a pool entry), how hypothesis draws its spec, the
    metas of its results, the modules it owns and what it computes."""

    name = ""
    kinds = ("map", "seq", "vec")

    def ok(self, m: Meta) -> bool:
        return m.kind in self.kinds

    def draw(self, draw, pool: list[Meta], src: int) -> Step:
        return Step(self.name, (src,), {})

    def meta(self, pool: list[Meta], s: Step) -> list[Meta]:
        return [pool[s.inputs[0]]]

    def build(self, pool: list[Meta], s: Step) -> dict:
        return {}

    def run(self, mods, xs: list, p: dict, ms: list) -> list:
        raise NotImplementedError


OPS: dict[str, Op] = {}


def register(cls):
    OPS[cls.name] = cls()
    return cls


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _width(draw, lo: int = 1) -> int:
    return draw(st.integers(lo, MAX_C))


_ACTS: dict[str, Callable] = {
    "relu": lambda m, x: m["f"](x),
    "relu_f": lambda m, x: F.relu(x),
    "relu_m": lambda m, x: x.relu(),
    "relu_inplace": lambda m, x: m["f"](x.clone()),
    "gelu": lambda m, x: m["f"](x),
    "tanh": lambda m, x: torch.tanh(x),
    "sigmoid": lambda m, x: m["f"](x),
    "silu": lambda m, x: F.silu(x),
    "hardswish": lambda m, x: m["f"](x),
    "leaky": lambda m, x: m["f"](x),
    "relu6": lambda m, x: m["f"](x),
    "prelu": lambda m, x: m["f"](x),
    "dropout": lambda m, x: m["f"](x),
}
_ACT_MODULES = {
    "relu": lambda c: nn.ReLU(),
    "relu_inplace": lambda c: nn.ReLU(inplace=True),
    "gelu": lambda c: nn.GELU(),
    "sigmoid": lambda c: nn.Sigmoid(),
    "hardswish": lambda c: nn.Hardswish(),
    "leaky": lambda c: nn.LeakyReLU(0.1),
    "relu6": lambda c: nn.ReLU6(),
    "prelu": lambda c: nn.PReLU(c),
    "dropout": lambda c: nn.Dropout(0.5),
}


@register
class Act(Op):
    name = "act"

    def draw(self, draw, pool, src):
        names = list(_ACTS)
        if pool[src].kind == "seq":
            names.remove("prelu")  # PReLU's channel axis is 1, the token axis of [B, L, D]
        return Step(self.name, (src,), {"fn": draw(st.sampled_from(names))})

    def build(self, pool, s):
        make = _ACT_MODULES.get(s.params["fn"])
        return {"f": make(pool[s.inputs[0]].c)} if make else {}

    def run(self, mods, xs, p, ms):
        return [_ACTS[p["fn"]](mods, xs[0])]


@register
class Conv(Op):
    """nn.Conv2d: plain, grouped (1 < G < C) or depthwise (G = C, multiplier m)."""

    name = "conv"
    kinds = ("map",)

    def draw(self, draw, pool, src):
        m = pool[src]
        c, h = m.c, m.shape[1]
        mode = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
        k = draw(st.sampled_from([1, 3]))
        stride = draw(st.sampled_from([1, 2])) if h >= 3 else 1
        bias = draw(st.booleans())
        if mode == "depthwise":
            out, groups = c * draw(st.sampled_from([1, 2])), c
        elif mode == "grouped" and c >= 2:
            groups = draw(st.sampled_from([g for g in _divisors(c) if g > 1]))
            out = groups * draw(st.integers(1, max(1, MAX_C // groups)))
        else:
            out, groups = _width(draw), 1
        return Step(
            self.name,
            (src,),
            {"out": out, "k": k, "stride": stride, "groups": groups, "bias": bias},
        )

    def meta(self, pool, s):
        m, p = pool[s.inputs[0]], s.params
        h = (m.shape[1] + 2 * (p["k"] // 2) - p["k"]) // p["stride"] + 1
        w = (m.shape[2] + 2 * (p["k"] // 2) - p["k"]) // p["stride"] + 1
        return [Meta("map", (p["out"], h, w), (h, w))]

    def build(self, pool, s):
        p = s.params
        return {
            "conv": nn.Conv2d(
                pool[s.inputs[0]].c,
                p["out"],
                p["k"],
                p["stride"],
                p["k"] // 2,
                groups=p["groups"],
                bias=p["bias"],
            )
        }

    def run(self, mods, xs, p, ms):
        return [mods["conv"](xs[0])]


class FunctionalConv(nn.Module):
    """A user module computing ``F.conv2d`` from its own parameters (traced through)."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k))
        self.bias = nn.Parameter(torch.randn(cout) * 0.1) if bias else None
        self.pad = k // 2

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, padding=self.pad)


@register
class FConv(Op):
    name = "fconv"
    kinds = ("map",)

    def draw(self, draw, pool, src):
        return Step(
            self.name,
            (src,),
            {"out": _width(draw), "k": draw(st.sampled_from([1, 3])), "bias": draw(st.booleans())},
        )

    def meta(self, pool, s):
        m = pool[s.inputs[0]]
        return [m.with_c(s.params["out"])]

    def build(self, pool, s):
        p = s.params
        return {"conv": FunctionalConv(pool[s.inputs[0]].c, p["out"], p["k"], p["bias"])}

    def run(self, mods, xs, p, ms):
        return [mods["conv"](xs[0])]


@register
class Linear(Op):
    """nn.Linear over the last axis (tokens and vectors); on maps, channels-last in between
    permutes (``permute`` / ``transpose`` forms)."""

    name = "linear"

    def draw(self, draw, pool, src):
        p = {"out": _width(draw), "bias": draw(st.booleans())}
        if pool[src].kind == "map":
            p["form"] = draw(st.sampled_from(["permute", "transpose", "movedim"]))
        elif pool[src].kind == "seq" and draw(st.integers(0, 3)) == 0:
            p["form"] = "conv1d"  # over tokens: [B, D, L] -> Conv1d(k=3) -> [B, L, D']
        return Step(self.name, (src,), p)

    def meta(self, pool, s):
        return [pool[s.inputs[0]].with_c(s.params["out"])]

    def build(self, pool, s):
        c, p = pool[s.inputs[0]].c, s.params
        if p.get("form") == "conv1d":
            return {"fc": nn.Conv1d(c, p["out"], 3, padding=1, bias=p["bias"])}
        return {"fc": nn.Linear(c, p["out"], bias=p["bias"])}

    def run(self, mods, xs, p, ms):
        x = xs[0]
        form = p.get("form")
        if form == "permute":
            return [mods["fc"](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)]
        if form == "transpose":
            return [mods["fc"](x.transpose(1, 3)).transpose(1, 3)]
        if form == "movedim":
            return [torch.movedim(mods["fc"](torch.movedim(x, 1, -1)), -1, 1)]
        if form == "conv1d":
            return [mods["fc"](x.transpose(1, 2)).transpose(1, 2)]
        return [mods["fc"](x)]


@register
class Norm(Op):
    """BatchNorm (maps and vectors), GroupNorm (maps) and LayerNorm over channels (all kinds:
    channels-last for maps, or over [C, H, W])."""

    name = "norm"

    def draw(self, draw, pool, src):
        m = pool[src]
        kinds = {
            "map": ["bn", "gn", "ln_cl", "ln_chw", "ln_f"],
            "seq": ["ln", "ln_f", "ln_ld", "bn_seq"],
            "vec": ["bn", "ln"],
        }[m.kind]
        kind = draw(st.sampled_from(kinds))
        p = {"kind": kind}
        if kind == "gn":
            p["groups"] = draw(st.sampled_from(_divisors(m.c)))
        return Step(self.name, (src,), p)

    def build(self, pool, s):
        m, kind = pool[s.inputs[0]], s.params["kind"]
        if kind in ("bn", "bn_seq"):
            return {"n": (nn.BatchNorm2d if m.kind == "map" else nn.BatchNorm1d)(m.c)}
        if kind == "ln_ld":
            return {"n": nn.LayerNorm(list(m.shape))}
        if kind == "gn":
            return {"n": nn.GroupNorm(s.params["groups"], m.c)}
        if kind == "ln_chw":
            return {"n": nn.LayerNorm(list(m.shape))}
        if kind == "ln_f":
            return {"w": _Affine(m.c)}
        return {"n": nn.LayerNorm(m.c)}

    def run(self, mods, xs, p, ms):
        x, kind = xs[0], p["kind"]
        if kind == "ln_cl":
            return [mods["n"](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)]
        if kind == "bn_seq":
            return [mods["n"](x.transpose(1, 2)).transpose(1, 2)]
        if kind == "ln_f":
            a = mods["w"]
            if ms[0].kind == "map":
                y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), a.weight, a.bias)
                return [y.permute(0, 3, 1, 2)]
            return [F.layer_norm(x, (x.shape[-1],), a.weight, a.bias)]
        return [mods["n"](x)]


class _Affine(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))


_BINARY: dict[str, Callable] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "torch_add": lambda a, b: torch.add(a, b),
    "method_add": lambda a, b: a.add(b),
    "maximum": lambda a, b: torch.maximum(a, b),
    "iadd": None,
    "rmul": lambda a, b: b * a,
    "where": lambda a, b: torch.where(a > 0, a, b),
    "stack_mean": lambda a, b: torch.stack([a, b], 0).mean(0),
}


def _iadd(a, b):
    y = a.clone()
    y += b
    return y


_BINARY["iadd"] = _iadd


@register
class Binary(Op):
    """Elementwise a (op) b where b has a's shape or broadcasts (size 1) into it: residual
    adds, products with [B,C,1,1] gates and [B,1,H,W] masks."""

    name = "binary"

    def draw(self, draw, pool, src):
        a = pool[src]
        partners = [i for i in reversed(range(len(pool))) if _broadcasts(pool[i], a)]
        b = partners[draw(st.integers(0, len(partners) - 1))]
        fns = [f for f in _BINARY if f != "stack_mean" or pool[b] == a]
        return Step(self.name, (src, b), {"fn": draw(st.sampled_from(fns))})

    def run(self, mods, xs, p, ms):
        return [_BINARY[p["fn"]](xs[0], xs[1])]


def _broadcasts(b: Meta, a: Meta) -> bool:
    return (
        b.kind == a.kind
        and len(b.shape) == len(a.shape)
        and all(y in (x, 1) for x, y in zip(a.shape, b.shape))
    )


@register
class Gate(Op):
    """Squeeze-and-excitation x * sigmoid(fc2(relu(fc1(pool(x))))) with a [B,C,1,1] gate
    (1x1 convs, or Linears with the vector viewed back in several ways), or a [B,1,H,W]
    spatial mask x * sigmoid(conv(x)); on tokens a [B,1,D] gate from the token mean."""

    name = "gate"
    kinds = ("map", "seq")
    FORMS = ["se_conv", "se_view", "se_index", "se_unsqueeze", "se_reshape_size", "mask"]

    def draw(self, draw, pool, src):
        forms = self.FORMS if pool[src].kind == "map" else ["seq"]
        return Step(
            self.name,
            (src,),
            {"form": draw(st.sampled_from(forms)), "hidden": draw(st.integers(1, 4))},
        )

    def build(self, pool, s):
        c, hid = pool[s.inputs[0]].c, s.params["hidden"]
        form = s.params["form"]
        if form == "mask":
            return {"m": nn.Conv2d(c, 1, 3, padding=1)}
        if form == "se_conv":
            return {"fc1": nn.Conv2d(c, hid, 1), "fc2": nn.Conv2d(hid, c, 1)}
        return {"fc1": nn.Linear(c, hid), "fc2": nn.Linear(hid, c)}

    def run(self, mods, xs, p, ms):
        x, form = xs[0], p["form"]
        if form == "mask":
            return [x * torch.sigmoid(mods["m"](x))]
        if form == "seq":
            g = torch.sigmoid(mods["fc2"](F.relu(mods["fc1"](x.mean(1)))))
            return [x * g.unsqueeze(1)]
        if form == "se_conv":
            s = F.adaptive_avg_pool2d(x, 1)
            return [x * torch.sigmoid(mods["fc2"](F.relu(mods["fc1"](s))))]
        s = torch.sigmoid(mods["fc2"](F.relu(mods["fc1"](x.mean((2, 3))))))
        if form == "se_view":
            s = s.view(BATCH, -1, 1, 1)
        elif form == "se_index":
            s = s[:, :, None, None]
        elif form == "se_unsqueeze":
            s = s.unsqueeze(-1).unsqueeze(-1)
        else:
            s = s.reshape(x.size(0), x.size(1), 1, 1)
        return [x * s]


@register
class Cat(Op):
    """cat along the channel axis of 2 or 3 entries (the same entry may repeat)."""

    name = "cat"

    def draw(self, draw, pool, src):
        a = pool[src]
        partners = [i for i in reversed(range(len(pool))) if _cat_compatible(pool[i], a)]
        n = draw(st.integers(1, 2))
        others = [partners[draw(st.integers(0, len(partners) - 1))] for _ in range(n)]
        order = [src, *others]
        return Step(self.name, tuple(order), {"fn": draw(st.sampled_from(["cat", "concat"]))})

    def meta(self, pool, s):
        ms = [pool[i] for i in s.inputs]
        return [ms[0].with_c(sum(m.c for m in ms))]

    def run(self, mods, xs, p, ms):
        fn = torch.cat if p["fn"] == "cat" else torch.concat
        return [fn(xs, dim=ms[0].axis)]


def _cat_compatible(b: Meta, a: Meta) -> bool:
    if b.kind != a.kind:
        return False
    sa, sb = list(a.shape), list(b.shape)
    del sa[a.axis - 1], sb[b.axis - 1]
    return sa == sb


@register
class Split(Op):
    """Cut the channel axis: split with sizes, equal split, chunk (possibly uneven), slices
    and narrow; every piece joins the pool and, with ``order``, a cat of the pieces in that
    order (swapped, repeated) too."""

    name = "split"

    def ok(self, m):
        return m.kind in self.kinds and m.c >= 2

    def draw(self, draw, pool, src):
        c = pool[src].c
        mode = draw(st.sampled_from(["sizes", "equal", "chunk", "slice", "narrow", "index"]))
        p: dict[str, Any] = {"mode": mode}
        if mode == "sizes":
            cut = sorted(set(draw(st.lists(st.integers(1, c - 1), min_size=1, max_size=2))))
            bounds = [0, *cut, c]
            p["sizes"] = [b - a for a, b in zip(bounds, bounds[1:])]
        elif mode == "equal":
            p["size"] = draw(st.sampled_from([d for d in _divisors(c) if d < c]))
        elif mode == "chunk":
            p["chunks"] = draw(st.integers(2, min(c, 4)))
        else:
            a = draw(st.integers(0, c - 1))
            b = draw(st.integers(a + 1, c))
            p["start"], p["stop"] = a, b
        n = len(self._pieces(c, p))
        if n > 1 and draw(st.booleans()):
            p["order"] = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=4))
        return Step(self.name, (src,), p)

    @staticmethod
    def _pieces(c: int, p: dict) -> list[int]:
        mode = p["mode"]
        if mode == "sizes":
            return list(p["sizes"])
        if mode == "equal":
            return [p["size"]] * (c // p["size"])
        if mode == "chunk":
            step = -(-c // p["chunks"])
            return [min(step, c - s) for s in range(0, c, step)]
        return [p["stop"] - p["start"]]

    def meta(self, pool, s):
        m = pool[s.inputs[0]]
        sizes = self._pieces(m.c, s.params)
        out = [m.with_c(n) for n in sizes]
        if "order" in s.params:
            out.append(m.with_c(sum(sizes[k] for k in s.params["order"])))
        return out

    def run(self, mods, xs, p, ms):
        x = xs[0]
        d = ms[0].axis
        mode = p["mode"]
        n = len(self._pieces(ms[0].c, p))
        if mode == "sizes":
            parts = torch.split(x, p["sizes"], dim=d)
        elif mode == "equal":
            parts = x.split(p["size"], d)
        elif mode == "chunk":
            parts = x.chunk(p["chunks"], d)
        if mode in ("sizes", "equal", "chunk"):
            pieces = [parts[k] for k in range(n)]
        elif mode == "narrow":
            pieces = [x.narrow(d, p["start"], p["stop"] - p["start"])]
        elif mode == "index" and d == 1:
            pieces = [x[:, p["start"] : p["stop"]]]
        else:
            pieces = [
                x[..., p["start"] : p["stop"]]
                if ms[0].kind == "seq"
                else x[:, p["start"] : p["stop"], ...]
            ]
        if "order" in p:
            pieces.append(torch.cat([pieces[k] for k in p["order"]], d))
        return pieces


@register
class Pool(Op):
    name = "pool"
    kinds = ("map",)

    def ok(self, m):
        return m.kind == "map" and m.shape[1] >= 2 and m.shape[2] >= 2

    def draw(self, draw, pool, src):
        return Step(
            self.name,
            (src,),
            {"fn": draw(st.sampled_from(["max", "avg", "fmax", "adaptive1", "adaptive2"]))},
        )

    def meta(self, pool, s):
        m = pool[s.inputs[0]]
        fn = s.params["fn"]
        h, w = m.shape[1:]
        h, w = (1, 1) if fn == "adaptive1" else (2, 2) if fn == "adaptive2" else (h // 2, w // 2)
        return [Meta("map", (m.c, h, w), (h, w))]

    def build(self, pool, s):
        fn = s.params["fn"]
        if fn == "max":
            return {"p": nn.MaxPool2d(2)}
        if fn == "avg":
            return {"p": nn.AvgPool2d(2)}
        if fn.startswith("adaptive"):
            return {"p": nn.AdaptiveAvgPool2d(int(fn[-1]))}
        return {}

    def run(self, mods, xs, p, ms):
        return [F.max_pool2d(xs[0], 2) if p["fn"] == "fmax" else mods["p"](xs[0])]


@register
class Shuffle(Op):
    """Channel-moving ops fxgrow claims: channel_shuffle, repeat (tiling), repeat_interleave."""

    name = "shuffle"
    kinds = ("map",)

    def draw(self, draw, pool, src):
        c = pool[src].c
        fns = ["repeat", "repeat_interleave"] + (
            ["channel_shuffle"] if c >= 4 and c % 2 == 0 else []
        )
        return Step(self.name, (src,), {"fn": draw(st.sampled_from(fns))})

    def meta(self, pool, s):
        m = pool[s.inputs[0]]
        return [m if s.params["fn"] == "channel_shuffle" else m.with_c(2 * m.c)]

    def build(self, pool, s):
        return {"s": nn.ChannelShuffle(2)} if s.params["fn"] == "channel_shuffle" else {}

    def run(self, mods, xs, p, ms):
        x = xs[0]
        if p["fn"] == "repeat":
            return [x.repeat(1, 2, 1, 1)]
        if p["fn"] == "repeat_interleave":
            return [x.repeat_interleave(2, dim=1)]
        return [mods["s"](x)]


@register
class Reduce(Op):
    """Reductions and normalisations over the channel axis.  Claimed exact: mean (uniform
    replication) and amax.  Not claimed (fxgrow must refuse the group): sum, unbiased var,
    softmax, cumsum, L2 normalisation, an opaque wrapped function."""

    name = "reduce"
    CLAIMED = ["mean_c", "amax_c"]
    UNCLAIMED = ["sum_c", "var_c", "softmax_c", "cumsum_c", "normalize_c", "opaque"]

    def draw(self, draw, pool, src):
        fns = self.CLAIMED + [f for f in self.UNCLAIMED if f != "var_c" or pool[src].c > 1]
        return Step(self.name, (src,), {"fn": draw(st.sampled_from(fns))})

    def run(self, mods, xs, p, ms):
        x, fn = xs[0], p["fn"]
        d = ms[0].axis
        if fn == "mean_c":
            return [x - x.mean(d, keepdim=True)]
        if fn == "amax_c":
            return [x - x.amax(d, keepdim=True)]
        if fn == "sum_c":
            return [x + x.sum(d, keepdim=True)]
        if fn == "var_c":
            return [x * x.var(d, keepdim=True)]
        if fn == "softmax_c":
            return [F.softmax(x, dim=d)]
        if fn == "cumsum_c":
            return [x.cumsum(d)]
        if fn == "normalize_c":
            return [F.normalize(x, dim=d)]
        return [fuzz_opaque(x, d)]


@register
class ToVec(Op):
    """[B, C, H, W] or [B, L, D] to a vector: global pooling, flatten / view / reshape of
    channel x space, token mean, first token."""

    name = "to_vec"
    kinds = ("map", "seq")

    def draw(self, draw, pool, src):
        forms = (
            ["gap", "mean", "flatten", "view", "reshape_const", "nn_flatten", "flatten_cl"]
            if pool[src].kind == "map"
            else ["token_mean", "first_token", "flatten_tokens"]
        )
        return Step(
            self.name,
            (src,),
            {"form": draw(st.sampled_from(forms)), "n": math.prod(pool[src].shape)},
        )

    def meta(self, pool, s):
        m = pool[s.inputs[0]]
        if s.params["form"] in ("gap", "mean", "token_mean", "first_token"):
            return [Meta("vec", (m.c,))]
        return [Meta("vec", (math.prod(m.shape),))]

    def build(self, pool, s):
        form = s.params["form"]
        if form == "gap":
            return {"p": nn.AdaptiveAvgPool2d(1)}
        if form == "nn_flatten":
            return {"f": nn.Flatten()}
        return {}

    def run(self, mods, xs, p, ms):
        x, form = xs[0], p["form"]
        if form == "gap":
            return [torch.flatten(mods["p"](x), 1)]
        if form == "mean":
            return [x.mean((2, 3))]
        if form == "flatten":
            return [x.flatten(1)]
        if form == "view":
            return [x.view(x.size(0), -1)]
        if form == "reshape_const":
            return [x.reshape(BATCH, p["n"])]
        if form == "nn_flatten":
            return [mods["f"](x)]
        if form == "flatten_cl":
            return [x.permute(0, 2, 3, 1).flatten(1)]
        if form == "token_mean":
            return [x.mean(1)]
        if form == "first_token":
            return [x[:, 0]]
        return [x.flatten(1)]


@register
class ToSeq(Op):
    """[B, C, H, W] -> tokens [B, HW, C] (flatten + transpose, or permute + reshape)."""

    name = "to_seq"
    kinds = ("map",)

    def draw(self, draw, pool, src):
        return Step(
            self.name,
            (src,),
            {"form": draw(st.sampled_from(["flatten_transpose", "permute_reshape"]))},
        )

    def meta(self, pool, s):
        m = pool[s.inputs[0]]
        return [Meta("seq", (m.shape[1] * m.shape[2], m.c), m.shape[1:])]

    def run(self, mods, xs, p, ms):
        x = xs[0]
        if p["form"] == "flatten_transpose":
            return [x.flatten(2).transpose(1, 2)]
        return [x.permute(0, 2, 3, 1).reshape(x.size(0), -1, x.size(1))]


@register
class ToMap(Op):
    """Tokens of a map back to [B, D, H, W]."""

    name = "to_map"
    kinds = ("seq",)

    def ok(self, m):
        return m.kind == "seq" and m.hw is not None

    def draw(self, draw, pool, src):
        return Step(
            self.name,
            (src,),
            {"form": draw(st.sampled_from(["transpose", "permute"])), "hw": tuple(pool[src].hw)},
        )

    def meta(self, pool, s):
        m = pool[s.inputs[0]]
        return [Meta("map", (m.c, *m.hw), m.hw)]

    def run(self, mods, xs, p, ms):
        x = xs[0]
        return (
            [x.transpose(1, 2).reshape(BATCH, x.shape[2], *p["hw"])]
            if p["form"] == "transpose"
            else [x.unflatten(1, tuple(p["hw"])).permute(0, 3, 1, 2)]
        )


@register
class Attention(Op):
    """Self-attention over tokens: q, k, v projections (one fused Linear + chunk, or three),
    reshape into heads, softmax(q kᵀ / sqrt(d)) v by hand / with SDPA, heads merged back,
    output projection; or nn.MultiheadAttention."""

    name = "attn"
    kinds = ("seq",)
    HEADS = ["reshape", "view_size", "unflatten"]

    def draw(self, draw, pool, src):
        d = pool[src].c
        form = draw(st.sampled_from(["manual", "sdpa", "mha", "einsum"]))
        if form == "mha":
            heads = draw(st.sampled_from(_divisors(d)))
            return Step(
                self.name, (src,), {"form": form, "heads": heads, "dim": d // heads, "out": d}
            )
        heads = draw(st.integers(1, 3))
        dim = draw(st.integers(1, 3))
        return Step(
            self.name,
            (src,),
            {
                "form": form,
                "heads": heads,
                "dim": dim,
                "out": _width(draw),
                "fused": draw(st.booleans()),
                "split": draw(st.sampled_from(self.HEADS)),
                "merge": draw(st.sampled_from(["reshape", "flatten", "view_minus_one"])),
            },
        )

    def meta(self, pool, s):
        return [pool[s.inputs[0]].with_c(s.params["out"])]

    def build(self, pool, s):
        d, p = pool[s.inputs[0]].c, s.params
        if p["form"] == "mha":
            return {"mha": nn.MultiheadAttention(d, p["heads"], batch_first=True)}
        e = p["heads"] * p["dim"]
        mods = {"proj": nn.Linear(e, p["out"])}
        if p["fused"]:
            mods["qkv"] = nn.Linear(d, 3 * e)
        else:
            mods.update(q=nn.Linear(d, e), k=nn.Linear(d, e), v=nn.Linear(d, e))
        return mods

    def run(self, mods, xs, p, ms):
        x = xs[0]
        if p["form"] == "mha":
            return [mods["mha"](x, x, x, need_weights=False)[0]]
        h, dh = p["heads"], p["dim"]
        L = x.shape[1]
        if p["fused"]:
            q, k, v = mods["qkv"](x).chunk(3, dim=-1)
        else:
            q, k, v = mods["q"](x), mods["k"](x), mods["v"](x)

        def heads(t):
            if p["split"] == "reshape":
                return t.reshape(BATCH, L, h, dh).transpose(1, 2)
            if p["split"] == "view_size":
                return t.view(t.size(0), t.size(1), h, -1).transpose(1, 2)
            return t.unflatten(-1, (h, dh)).permute(0, 2, 1, 3)

        q, k, v = heads(q), heads(k), heads(v)
        if p["form"] == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        elif p["form"] == "einsum":
            a = torch.einsum("bhld,bhmd->bhlm", q, k) / math.sqrt(dh)
            o = torch.einsum("bhlm,bhmd->bhld", a.softmax(-1), v)
        else:
            a = torch.softmax(q @ k.transpose(-2, -1) * dh**-0.5, dim=-1)
            o = torch.matmul(a, v)
        o = o.transpose(1, 2)
        if p["merge"] == "reshape":
            o = o.reshape(BATCH, L, h * dh)
        elif p["merge"] == "flatten":
            o = o.flatten(2)
        else:
            o = o.contiguous().view(BATCH, L, -1)
        return [mods["proj"](o)]


@register
class Upsample(Op):
    """Ops that trade channels for space: ConvTranspose2d(k=2, stride=2), pixel_shuffle(2),
    and a channel shuffle written by hand (view into groups, transpose, reshape back)."""

    name = "upsample"
    kinds = ("map",)

    def ok(self, m):
        return m.kind == "map"

    def draw(self, draw, pool, src):
        m = pool[src]
        fns = ["convT", "interpolate"] if m.shape[1] <= 4 else []
        if m.c % 4 == 0 and m.shape[1] <= 4:
            fns.append("pixel_shuffle")
        shuffles = [g for g in _divisors(m.c) if 1 < g < m.c]
        if shuffles:
            fns.append("manual_shuffle")
        if not fns:
            fns = ["manual_shuffle"]
            shuffles = [1]
        fn = draw(st.sampled_from(fns))
        p: dict[str, Any] = {"fn": fn}
        if fn == "convT":
            p["out"] = _width(draw)
        elif fn == "manual_shuffle":
            p["groups"] = draw(st.sampled_from(shuffles))
            p["c"] = m.c
            p["sizes"] = draw(st.booleans())
        return Step(self.name, (src,), p)

    def meta(self, pool, s):
        m, fn = pool[s.inputs[0]], s.params["fn"]
        h, w = m.shape[1:]
        if fn == "convT":
            return [Meta("map", (s.params["out"], 2 * h, 2 * w), (2 * h, 2 * w))]
        if fn == "interpolate":
            return [Meta("map", (m.c, 2 * h, 2 * w), (2 * h, 2 * w))]
        if fn == "pixel_shuffle":
            return [Meta("map", (m.c // 4, 2 * h, 2 * w), (2 * h, 2 * w))]
        return [m]

    def build(self, pool, s):
        if s.params["fn"] == "convT":
            return {"up": nn.ConvTranspose2d(pool[s.inputs[0]].c, s.params["out"], 2, 2)}
        if s.params["fn"] == "pixel_shuffle":
            return {"up": nn.PixelShuffle(2)}
        return {}

    def run(self, mods, xs, p, ms):
        x = xs[0]
        if p["fn"] == "interpolate":
            return [F.interpolate(x, scale_factor=2, mode="nearest")]
        if p["fn"] != "manual_shuffle":
            return [mods["up"](x)]
        g, c = p["groups"], p["c"]
        h, w = ms[0].shape[1:]
        if p.get("sizes"):  # the sizes read from the tensor at run time
            b, n = x.size(0), x.size(1)
            return [x.view(b, g, n // g, h, w).transpose(1, 2).reshape(b, n, h, w)]
        return [x.view(BATCH, g, c // g, h, w).transpose(1, 2).reshape(BATCH, c, h, w)]


REUSABLE = (
    "conv",
    "fconv",
    "linear",
    "norm",
    "gate",
    "attn",
    "act",
    "flinear",
    "token_mix",
    "blocks",
)


@register
class Reuse(Op):
    """Call an earlier step's modules again on another tensor of the same shape (a shared
    module called twice couples its inputs).  ``params``: the step, its op and params."""

    name = "reuse"

    def meta(self, pool, s):
        p = s.params
        return OPS[p["op"]].meta(pool, Step(p["op"], s.inputs, p["params"]))

    def run(self, mods, xs, p, ms):
        return OPS[p["op"]].run(mods, xs, p["params"], ms)


@register
class Tied(Op):
    """F.linear(x, W.t()) with W the weight of an earlier Linear step: one tensor both
    produces (there) and is contracted on its output axis (here) -- tied weights, like an
    embedding reused as the output projection.  ``params``: the step and W's input width."""

    name = "tied"
    kinds = ("seq", "vec")

    def meta(self, pool, s):
        return [pool[s.inputs[0]].with_c(s.params["in"])]

    def run(self, mods, xs, p, ms):
        # a Linear's weight [out, in] read transposed; an Embedding's [vocabulary, dim] as is
        w = mods["weight"]
        return [F.linear(xs[0], w if p.get("embedding") else w.t())]


class OwnLinear(nn.Module):
    """A user module computing a linear map from its own parameters: F.linear, einsum, or a
    matmul with the transposed weight (traced through, parameters read by get_attr)."""

    def __init__(self, cin: int, cout: int, form: str, bias: bool) -> None:
        super().__init__()
        self.form = form
        self.weight = nn.Parameter(torch.randn(cout, cin) / math.sqrt(cin))
        self.bias = nn.Parameter(torch.randn(cout) * 0.1) if bias else None

    def forward(self, x):
        if self.form == "flinear":
            return F.linear(x, self.weight, self.bias)
        if self.form == "einsum_seq":
            y = torch.einsum("bld,ed->ble", x, self.weight)
        elif self.form == "einsum_vec":
            y = torch.einsum("bd,ed->be", x, self.weight)
        else:
            y = x @ self.weight.t()
        return y if self.bias is None else y + self.bias


@register
class FLinear(Op):
    name = "flinear"
    kinds = ("seq", "vec")

    def draw(self, draw, pool, src):
        forms = ["flinear", "matmul", "einsum_seq" if pool[src].kind == "seq" else "einsum_vec"]
        return Step(
            self.name,
            (src,),
            {
                "out": _width(draw),
                "form": draw(st.sampled_from(forms)),
                "bias": draw(st.booleans()),
            },
        )

    def meta(self, pool, s):
        return [pool[s.inputs[0]].with_c(s.params["out"])]

    def build(self, pool, s):
        p = s.params
        return {"fc": OwnLinear(pool[s.inputs[0]].c, p["out"], p["form"], p["bias"])}

    def run(self, mods, xs, p, ms):
        return [mods["fc"](xs[0])]


@register
class TokenMix(Op):
    """A Linear across positions (MLP-Mixer): maps flattened to [B, C, HW], tokens transposed
    to [B, D, L]; the channel axis passes through like a batch axis."""

    name = "token_mix"
    kinds = ("map", "seq")

    def draw(self, draw, pool, src):
        return Step(self.name, (src,), {"n": math.prod(pool[src].shape) // pool[src].c})

    def build(self, pool, s):
        return {"fc": nn.Linear(s.params["n"], s.params["n"])}

    def run(self, mods, xs, p, ms):
        x = xs[0]
        if ms[0].kind == "map":
            return [mods["fc"](x.flatten(2)).view(x.shape)]
        return [mods["fc"](x.transpose(1, 2)).transpose(1, 2)]


@register
class Embed(Op):
    """Token ids to vectors: nn.Embedding, or F.embedding with the model's own table."""

    name = "embed"
    kinds = ("ids",)

    def draw(self, draw, pool, src):
        return Step(
            self.name,
            (src,),
            {"out": _width(draw, 2), "form": draw(st.sampled_from(["module", "functional"]))},
        )

    def meta(self, pool, s):
        return [Meta("seq", (pool[s.inputs[0]].shape[0], s.params["out"]))]

    def build(self, pool, s):
        return {"emb": nn.Embedding(pool[s.inputs[0]].shape[1], s.params["out"])}

    def run(self, mods, xs, p, ms):
        if p["form"] == "module":
            return [mods["emb"](xs[0])]
        return [F.embedding(xs[0], mods["emb"].weight)]


@register
class Condition(Op):
    """x with a per-sample vector v [B, C] of the same width broadcast over space or tokens
    (FiLM-style conditioning): x + v, x * v, or x * (1 + v) + v.  Inputs: (x, v)."""

    name = "condition"
    kinds = ("map", "seq")

    def draw(self, draw, pool, src):
        c = pool[src].c
        vs = [i for i in reversed(range(len(pool))) if pool[i].kind == "vec" and pool[i].c == c]
        v = vs[draw(st.integers(0, len(vs) - 1))]
        return Step(self.name, (src, v), {"fn": draw(st.sampled_from(["add", "mul", "film"]))})

    def run(self, mods, xs, p, ms):
        x, v = xs
        v = v[:, :, None, None] if ms[0].kind == "map" else v.unsqueeze(1)
        if p["fn"] == "add":
            return [x + v]
        if p["fn"] == "mul":
            return [x * v]
        return [x * (1 + v) + v]


class FuzzBlock(nn.Module):
    """A residual block: ``basic`` relu(x + bn(conv(relu(bn(conv(x)))))) on maps; on tokens
    ``prenorm`` x + fc2(gelu(fc1(ln(x)))) or ``postnorm`` ln(x + fc2(gelu(fc1(x))))."""

    def __init__(self, c: int, kind: str, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "basic":
            self.conv1, self.bn1 = (
                nn.Conv2d(c, hidden, 3, padding=1, bias=False),
                nn.BatchNorm2d(hidden),
            )
            self.conv2, self.bn2 = nn.Conv2d(hidden, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        else:
            self.ln = nn.LayerNorm(c)
            self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x):
        if self.kind == "basic":
            return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        if self.kind == "prenorm":
            return x + self.fc2(F.gelu(self.fc1(self.ln(x))))
        return self.ln(x + self.fc2(F.gelu(self.fc1(x))))


@register
class Blocks(Op):
    """A stage: nn.Sequential of 1-3 residual blocks (deepen(kind="block") and grow(blocks=)
    apply to them)."""

    name = "blocks"
    kinds = ("map", "seq")

    def draw(self, draw, pool, src):
        kinds = ["basic"] if pool[src].kind == "map" else ["prenorm", "postnorm"]
        return Step(
            self.name,
            (src,),
            {
                "kind": draw(st.sampled_from(kinds)),
                "n": draw(st.integers(1, 3)),
                "hidden": _width(draw),
            },
        )

    def build(self, pool, s):
        p = s.params
        return {
            "stage": nn.Sequential(
                *[FuzzBlock(pool[s.inputs[0]].c, p["kind"], p["hidden"]) for _ in range(p["n"])]
            )
        }

    def run(self, mods, xs, p, ms):
        return [mods["stage"](xs[0])]


# the order in which hypothesis shrinks op choices: simplest first
from . import archs_mixers  # noqa: F401  (registers shape_mix, inplace, gather, rel_attn)

OP_ORDER = [
    "act",
    "conv",
    "linear",
    "norm",
    "binary",
    "cat",
    "split",
    "pool",
    "gate",
    "to_vec",
    "to_seq",
    "to_map",
    "attn",
    "fconv",
    "shuffle",
    "reduce",
    "upsample",
    "reuse",
    "tied",
    "flinear",
    "token_mix",
    "embed",
    "condition",
    "blocks",
    "shape_mix",
    "inplace",
    "gather",
    "rel_attn",
]
assert sorted(OP_ORDER) == sorted(OPS)


# -- the module ----------------------------------------------------------------------------------------
class FuzzNet(nn.Module):
    """The model of a program: ``steps.{k}`` holds step k's modules, ``heads.{j}`` output j's."""

    def __init__(self, program: Program) -> None:
        super().__init__()
        self.program = program
        pool = [input_meta(program.input)]
        self.steps = nn.ModuleList()
        for s in program.steps:
            self.steps.append(nn.ModuleDict(OPS[s.op].build(pool, s)))
            pool.extend(OPS[s.op].meta(pool, s))
        self.heads = nn.ModuleList()
        for i, head in program.outputs:
            self.heads.append(nn.Linear(pool[i].c, 3) if head == "linear" else nn.Identity())

    def forward(self, x):
        pool = [x]
        metas = self.program.metas()
        for s, mods in zip(self.program.steps, self.steps):
            if s.op == "reuse":
                mods = self.steps[s.params["step"]]
            elif s.op == "tied":
                owner = self.steps[s.params["step"]]
                mods = {"weight": owner["emb" if s.params.get("embedding") else "fc"].weight}
            pool.extend(
                OPS[s.op].run(
                    mods, [pool[i] for i in s.inputs], s.params, [metas[i] for i in s.inputs]
                )
            )
        outs = []
        for (i, head), m in zip(self.program.outputs, self.heads):
            y = pool[i]
            if head == "linear":
                if metas[i].kind == "map":
                    y = y.mean((2, 3))
                elif metas[i].kind == "seq":
                    y = y.mean(1)
                y = m(y)
            outs.append(y)
        return outs[0] if len(outs) == 1 else tuple(outs)


def build(program: Program) -> tuple[nn.Module, torch.Tensor]:
    """The program's model (seeded weights, non-trivial norm statistics, eval mode, in the
    program's dtype) and its example input."""
    torch.manual_seed(program.seed)
    model = FuzzNet(program)
    g = torch.Generator().manual_seed(program.seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            if (
                isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, _Affine))
                and getattr(m, "weight", None) is not None
            ):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.45 + 0.05)
    model = model.to(getattr(torch, program.dtype)).eval()
    return model, example_input(program)


# -- the hypothesis strategy ------------------------------------------------------------------
def _pick(draw, pool: list[Meta], ok: Callable[[Meta], bool]) -> int | None:
    """A pool index among those ``ok`` accepts, shrinking towards the newest entry."""
    cands = [i for i in reversed(range(len(pool))) if ok(pool[i])]
    if not cands:
        return None
    return cands[draw(st.one_of(st.just(0), st.integers(0, len(cands) - 1)))]


@st.composite
def programs(draw, max_steps: int = 8, dtypes=("float64",)) -> Program:
    """A random program: an input, 1..max_steps ops, outputs the results no step reads."""
    kind = draw(st.sampled_from(["map", "map", "map", "seq", "ids"]))
    if kind == "map":
        hw = draw(st.integers(2, 6))
        spec = ("map", draw(st.integers(1, 4)), hw, hw)
    elif kind == "seq":
        spec = ("seq", draw(st.integers(2, 6)), draw(st.integers(1, MAX_C)))
    else:
        spec = ("ids", draw(st.integers(2, 6)), draw(st.integers(2, 12)))
    pool = [input_meta(spec)]
    steps = []
    for k in range(draw(st.integers(1, max_steps))):
        reuse = [
            (j, i)
            for j, s in enumerate(steps)
            if s.op in REUSABLE
            for i in range(len(pool))
            if pool[i] == pool[s.inputs[0]] and i != s.inputs[0]
        ]
        owners = [
            j
            for j, s in enumerate(steps)
            if s.op == "embed" or s.op == "linear" and "form" not in s.params
        ]
        tied = [
            (j, i)
            for j in owners
            for i in range(len(pool))
            if pool[i].kind in ("seq", "vec") and pool[i].c == steps[j].params["out"]
        ]
        conditioned = {m.c for m in pool if m.kind == "vec"}
        usable = [
            name
            for name in OP_ORDER
            if any(OPS[name].ok(m) for m in pool)
            and (name != "reuse" or reuse)
            and (name != "tied" or tied)
            and (
                name != "condition"
                or any(m.kind in ("map", "seq") and m.c in conditioned for m in pool)
            )
        ]
        # a stem layer reads the input, so every model has at least one channel space
        name = (
            {"map": "conv", "seq": "linear", "ids": "embed"}[spec[0]]
            if k == 0
            else draw(st.sampled_from(usable))
        )
        op = OPS[name]
        if name in ("reuse", "tied"):
            cands = reuse if name == "reuse" else tied
            j, src = cands[draw(st.integers(0, len(cands) - 1))]
            orig = steps[j]
            params = (
                {"step": j, "op": orig.op, "params": orig.params}
                if name == "reuse"
                else {"step": j, "in": pool[orig.inputs[0]].shape[1], "embedding": True}
                if orig.op == "embed"
                else {"step": j, "in": pool[orig.inputs[0]].c}
            )
            step = Step(name, (src,), params)
        elif name == "condition":
            src = _pick(draw, pool, lambda m: op.ok(m) and m.c in conditioned)
            step = op.draw(draw, pool, src)
        else:
            src = _pick(draw, pool, op.ok)
            step = op.draw(draw, pool, src)
        new = op.meta(pool, step)
        if any(m.c > 4 * MAX_C or math.prod(m.shape) > 2048 for m in new):
            continue  # keep models small
        steps.append(step)
        pool.extend(new)
    # every result no step reads is an output (the newest three), mostly through a head
    used = {i for s in steps for i in s.inputs}
    leaves = [i for i in range(len(pool)) if i not in used][-3:]
    outputs = [(i, draw(st.sampled_from(["linear", "linear", "raw"]))) for i in leaves]
    return Program(
        spec,
        steps,
        tuple(outputs),
        draw(st.sampled_from(list(dtypes))),
        draw(st.integers(0, 2**16)),
    )
