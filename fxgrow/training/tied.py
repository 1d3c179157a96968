"""Dropout masks tied across replicas, so that growth is exact in training mode too.

A widened activation holds copies of the teacher's units.  Dropout on it draws one mask entry
per student position, so the copies of a unit are dropped independently and the student's
training-mode function is not the teacher's sample for sample.  :class:`TiedDropout` draws the
mask at the teacher's shape -- the same random numbers, in the same order, as the teacher's
dropout (``empty(shape).bernoulli_(1 - p)``, what ``torch.dropout`` does on the CPU) -- and
copies it to the replicas along the widened axes; :class:`TiedAttention` does the same for the
attention weights of ``scaled_dot_product_attention`` with ``dropout_p > 0`` (heads replicated),
computing attention the way PyTorch's math kernel does in training mode and calling the fused
kernel in eval mode.  With the same seed the student then draws the teacher's masks: the
training-mode loss right after growth equals the loss right before.

Invariant: in eval mode both are what they replace; in training mode a replica's mask entry is
its source unit's.  The copies of a unit keep being dropped together for as long as the module
is in place (they still learn apart through ``split="random"``); growth that inserts new
dropout sites (new blocks) draws extra random numbers, so only widening is exact this way.
On CUDA the fused kernels draw masks differently: there the masks are the tied ones but not
the teacher's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis.arguments import argument
from ..fxnode import target_name


class _Tied(nn.Module):
    def __init__(self, p: float, axes: Sequence[Sequence[Any]]) -> None:
        super().__init__()
        self.p = float(p)
        # [axis, the teacher's size along it, the teacher position of each student position]
        self.axes: list[list[Any]] = [
            [int(a), int(old), [int(i) for i in index]] for a, old, index in axes
        ]
        for a, _, index in self.axes:
            self.register_buffer(
                f"index{a}", torch.tensor(index, dtype=torch.long), persistent=False
            )

    def mask(self, like: torch.Tensor) -> torch.Tensor:
        """A dropout mask (scaled by 1/(1-p)) drawn at the teacher's shape, copied out."""
        shape = list(like.shape)
        for a, old, _ in self.axes:
            shape[a] = old
        m = like.new_empty(shape).bernoulli_(1 - self.p).div_(1 - self.p)
        for a, _, _ in self.axes:
            m = m.index_select(a, getattr(self, f"index{a}"))
        return m

    def extra_repr(self) -> str:
        return f"p={self.p}, tied axes={[a for a, _, _ in self.axes]}"


class TiedDropout(_Tied):
    """``nn.Dropout(p)`` whose mask is the teacher's, copied along ``axes``
    (``[axis, teacher size, index]``: student position j copies teacher position index[j])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` times the tied mask in training (identity in eval mode or with ``p == 0``)."""
        if not self.training or self.p == 0.0:
            return x
        return x * self.mask(x)


class TiedAttention(_Tied):
    """``scaled_dot_product_attention`` with dropout ``p`` in training mode whose mask on the
    attention weights ``[..., heads, L, S]`` is the teacher's, copied along ``axes``."""

    def __init__(self, p: float, axes: Sequence[Sequence[Any]], aten: bool = True) -> None:
        super().__init__(p, axes)
        self.aten = bool(aten)  # what it replaced: the ATen op (export) or F's (fx)

    def forward(
        self, q, k, v, attn_mask=None, dropout_p=None, is_causal=False, scale=None, enable_gqa=False
    ):
        """Scaled dot-product attention whose attention-weight dropout uses the tied mask; in eval
        mode or with ``p == 0``, plain attention without dropout (``dropout_p`` is ignored)."""
        if not self.training or self.p == 0.0:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask, 0.0, is_causal, scale=scale, enable_gqa=enable_gqa
            )
        if enable_gqa and q.dim() >= 3 and q.shape[-3] != k.shape[-3]:
            r = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(r, -3), v.repeat_interleave(r, -3)
        s = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
        L, S = q.shape[-2], k.shape[-2]
        if is_causal:
            s = s.masked_fill(
                ~torch.ones(L, S, dtype=torch.bool, device=q.device).tril(), float("-inf")
            )
        if attn_mask is not None:
            s = (
                s.masked_fill(~attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool
                else s + attn_mask
            )
        w = s.softmax(-1)
        return (w * self.mask(w)) @ v


def untie(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, dict[str, list]]:
    """A copy of ``gm`` with every tied module back to what it replaced (``nn.Dropout``, the
    attention call), which fxgrow can analyse and grow again, and the tied axes by node name
    (``tie_dropout(..., previous=)`` composes them with the next growth's)."""
    import copy

    out = copy.deepcopy(gm)
    previous: dict[str, list] = {}
    for node in list(out.graph.nodes):
        m = out.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(m, TiedDropout):
            plain = nn.Dropout(m.p)
            plain.training = m.training
            out.add_submodule(node.target, plain)
            previous[node.name] = m.axes
        elif isinstance(m, TiedAttention):
            target = (
                torch.ops.aten.scaled_dot_product_attention.default
                if m.aten
                else F.scaled_dot_product_attention
            )
            with out.graph.inserting_before(node):
                call = out.graph.call_function(target, node.args, dict(node.kwargs))
            call.meta = dict(node.meta)
            node.replace_all_uses_with(call)
            out.graph.erase_node(node)
            out.delete_submodule(node.target)
            previous[call.name] = m.axes
    if previous:
        out.recompile()
    return out, previous


def _compose(previous: list, axes: list) -> list:
    """Tied axes of a site tied before (``previous``: student -> first teacher) after another
    growth (``axes``: new student -> old student): masks still drawn at the first teacher's
    shape."""
    now = {a: (old, index) for a, old, index in axes}
    out = []
    for a, old, index in previous:
        if a in now:
            out.append([a, old, [index[j] for j in now.pop(a)[1]]])
        else:
            out.append([a, old, index])
    out.extend([a, old, index] for a, (old, index) in now.items())
    return sorted(out)


def _tied_axes(info: Any, sp: Any, maps: dict) -> list:
    from ..planning.index_map import expand

    axes = []
    for d, layout in enumerate(getattr(info, "layouts", ())):
        index = expand(sp, layout, maps).index
        old = info.shape[d]
        if index.numel() != old or not torch.equal(index, torch.arange(old)):
            axes.append([d, old, index.tolist()])
    return axes


def tie_dropout(
    teacher: nn.Module,
    student: torch.fx.GraphModule,
    example_inputs: Any,
    *,
    width: Any,
    seed: int = 0,
    split: str = "equal",
    frontend: str = "auto",
    leaf_modules: Any = (),
    previous: dict[str, list] | None = None,
) -> int:
    """Replace the student's dropout on widened activations (``nn.Dropout`` modules and
    attention dropout) by tied ones; ``width``, ``seed``, ``split`` as given to
    ``fxgrow.grow`` (the plan is made again from them: the same maps).  Returns how many
    sites were tied.  ``previous`` (from :func:`untie`): sites tied by an earlier growth, whose
    masks stay drawn at the first teacher's shape."""
    from collections.abc import Mapping

    from ..api import analyze
    from ..frontend.modal import _SDPA, TrainingOnly, _free_path
    from ..planning.plan import make_plan, root_maps

    previous = previous or {}
    if not width and not previous:
        return 0
    analysis = analyze(teacher, example_inputs, frontend=frontend, leaf_modules=leaf_modules)
    if width:
        widths, factor = (width, None) if isinstance(width, Mapping) else (None, width)
        maps = root_maps(analysis, make_plan(analysis, widths, factor, seed, split, 0.0, False))
    else:
        maps = {}
    sp, values, gm = analysis.state.spaces, analysis.state.values, analysis.gm
    nodes = {n.name: n for n in student.graph.nodes}
    tied = 0
    for node in gm.graph.nodes:
        twin = nodes.get(node.name)
        if twin is None or twin.op != node.op or twin.target != node.target:
            continue
        if (
            node.op == "call_module"
            and type(dropout := gm.get_submodule(target_name(node))) is nn.Dropout
        ):
            p = dropout.p
            axes = _tied_axes(values.get(node.args[0]), sp, maps) if p > 0 else []
            if node.name in previous and p > 0:
                axes = _compose(previous[node.name], axes)
            if axes:
                module = TiedDropout(p, axes)
                module.training = student.get_submodule(target_name(node)).training
                student.add_submodule(target_name(node), module)
                tied += 1
        elif node.op == "call_function" and node.target in _SDPA:
            rate = argument(node, 4, "dropout_p", None)
            if not (
                isinstance(rate, torch.fx.Node)
                and rate.op == "call_module"
                and isinstance(only := gm.get_submodule(target_name(rate)), TrainingOnly)
            ):
                continue
            p = only.p
            out, key = values.get(node), values.get(node.args[1])
            if out is None or key is None:
                continue
            weights = type(out)(
                tuple(out.shape[:-1]) + (key.shape[-2],),
                tuple(out.layouts[:-1]) + (key.layouts[-2],),
            )
            axes = _tied_axes(weights, sp, maps)
            if node.name in previous:
                axes = _compose(previous[node.name], axes)
            if axes:
                attention = TiedAttention(
                    p, axes, aten=node.target is not F.scaled_dot_product_attention
                )
                attention.training = student.training
                path = _free_path(student, twin, "tied_attention")
                student.add_submodule(path, attention)
                with student.graph.inserting_before(twin):
                    call = student.graph.call_module(path, twin.args, dict(twin.kwargs))
                call.meta = dict(twin.meta)
                twin.replace_all_uses_with(call)
                student.graph.erase_node(twin)
                tied += 1
    if tied:
        student.recompile()
    return tied
