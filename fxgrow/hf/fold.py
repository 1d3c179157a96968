"""Folding a per-channel scale on an activation into the parameter that makes it.

Invariant: after ``fold_scale(gm, node, s)`` the graph computes ``node * s`` wherever it
used ``node`` -- with no new tensor: the scale went into the affine weight of the op that
produced ``node`` (a norm's weight and bias, ``(1 + w)`` of Gemma's RMSNorm, an embedding's
table).  A table that another op also reads (a tied embedding) is scaled all the same and
that op's input gets the inverse, folded the same way.  Used to remove the tie-compensation
buffers of widened students (``fxgrow_tie_scale*``) so the student is a state dict of the
teacher's class, and to compensate config-derived constants (Gemma's embedding scale).
"""

from __future__ import annotations

import operator

import torch
import torch.fx

from ..analysis.arguments import argument, bound_arguments
from ..analysis.rules.registry import has_trait
from ..errors import UnsupportedModelError
from ..fxnode import node_arg, owner, target_name


def _shown(target) -> str:
    """The op's name, for messages."""
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1]
    return getattr(target, "__name__", str(target))


def _calls(node: torch.fx.Node, trait: str) -> bool:
    """``node`` calls a function whose rule has ``trait``."""
    return node.op == "call_function" and has_trait(node.target, trait)


def _passes(node: torch.fx.Node) -> bool:
    """A cast, alias or metadata check: the same values."""
    return _calls(node, "alias") or _calls(node, "metadata_check")


def _through(node: torch.fx.Node, last: int | None = None) -> torch.fx.Node:
    """Back through casts and aliases (and, given the last axis's size ``last``, views that
    keep the last axis) to the op that made the values; dropout modules (linear: they commute
    with a scale) are passed too."""
    while node.args and isinstance(node.args[0], torch.fx.Node):
        if node.op == "call_module":
            m = owner(node).get_submodule(target_name(node))
            if not has_trait(m, "commutes_with_scale", exact=True):
                break
            node = node_arg(node, 0)
            continue
        if node.op != "call_function":
            break
        if _calls(node, "reshape") and last is not None:
            shape = argument(node, 1, None, None)
            if not (isinstance(shape, (list, tuple)) and shape and shape[-1] == last):
                break
        elif not _passes(node):
            break
        node = node_arg(node, 0)
    return node


def _attr(gm: torch.fx.GraphModule, node) -> str | None:
    if isinstance(node, torch.fx.Node):
        node = _through(node)
        if node.op == "get_attr":
            return node.target
    return None


def _readers(gm: torch.fx.GraphModule, target: str) -> list[torch.fx.Node]:
    t = _get(gm, target)
    out = []
    for n in gm.graph.nodes:
        if n.op == "get_attr" and _get(gm, n.target) is t:
            out.extend(_users_through(n))
    return out


def _users_through(node: torch.fx.Node) -> list[torch.fx.Node]:
    out = []
    for u in node.users:
        if _passes(u):
            out.extend(_users_through(u))
        else:
            out.append(u)
    return out


def _get(gm: torch.fx.GraphModule, target: str) -> torch.Tensor:
    return operator.attrgetter(target)(gm)


_RECORDS: list[list] = []


class recording:
    """``with recording() as folds:`` lists each ``(target, scale, shift)`` folded into a
    parameter inside the block, in order (the new value is ``((t + shift) * scale - shift)``
    computed in float64 with ``scale`` as given): what a streamed growth applies tensor by
    tensor to reproduce a fold made on a graph of meta tensors."""

    def __enter__(self) -> list:
        _RECORDS.append([])
        return _RECORDS[-1]

    def __exit__(self, *exc) -> None:
        _RECORDS.pop()


def _scale_param(gm, target: str, scale: torch.Tensor, shift: float = 0.0) -> None:
    if _RECORDS:
        _RECORDS[-1].append((target, scale.detach().to("cpu", torch.float64).clone(), shift))
    t = _get(gm, target)
    with torch.no_grad():
        s = scale.to(dtype=torch.float64, device=t.device)
        t.copy_(((t.double() + shift) * s - shift).to(t.dtype))


def fold_scale(
    gm: torch.fx.GraphModule,
    node: torch.fx.Node,
    scale: torch.Tensor,
    seen: frozenset = frozenset(),
) -> None:
    """Make ``node``'s values ``node * scale`` (``scale``: a scalar or one value per position
    of the last axis) by changing a parameter; raises UnsupportedModelError where no affine
    parameter makes ``node``."""
    made = _through(node, scale.numel() if scale.dim() else -1)
    kind = _shown(made.target) if made.op == "call_function" else made.op
    if made in seen:
        raise UnsupportedModelError(f"cannot fold a scale into {node.name}: a cycle of ties")
    if _calls(made, "scaled_norm"):
        bound = bound_arguments(made)
        w = argument(made, 2, "weight", None, bound=bound)
        b = argument(made, 3, "bias", None, bound=bound)
        for p in (w, b):
            target = _attr(gm, p)
            if p is not None and target is None:
                break
            if target is not None:
                _own(gm, target, made)
                _scale_param(gm, target, scale)
        else:
            return
    elif _calls(made, "mul") and len(made.args) == 2:
        for k in (0, 1):
            arg = made.args[k]
            target = _attr(gm, arg)
            shift, reader = 0.0, made
            if target is None and isinstance(arg, torch.fx.Node):
                inner = _through(arg)
                if _calls(inner, "add") and len(inner.args) == 2:
                    a, c = inner.args
                    if isinstance(c, torch.fx.Node):
                        a, c = c, a
                    if isinstance(c, (int, float)) and _attr(gm, a) is not None:
                        target, shift = _attr(gm, a), float(c)
                        reader = inner
            if target is not None and _get(gm, target).dim() <= 1:
                _own(gm, target, reader)
                _scale_param(gm, target, scale, shift)
                return
        consts = [a for a in made.args if isinstance(a, (int, float))]
        nodes = [a for a in made.args if isinstance(a, torch.fx.Node)]
        if len(consts) == 1 and len(nodes) == 1 and len(nodes[0].users) == 1:
            # x * c (T5's d_model ** -0.5 on the decoder output): (x s) c = (x c) s
            fold_scale(gm, nodes[0], scale, seen | {made})
            return
    elif _calls(made, "table_lookup"):
        target = _attr(gm, argument(made, 0, "weight", None))
        if target is not None:
            _scale_param(gm, target, scale if scale.dim() == 0 else scale.view(1, -1))
            for r in _readers(gm, target):  # a tied table: its other readers undo the scale
                if r is made:
                    continue
                if _calls(r, "affine") and _attr(gm, argument(r, 1, "weight", None)) is not None:
                    fold_scale(gm, argument(r, 0, "input"), 1.0 / scale, seen | {made})
                else:
                    raise UnsupportedModelError(
                        f"cannot fold a scale into {target}: {r.name} also reads it"
                    )
            return
    raise UnsupportedModelError(
        f"cannot fold a scale into the op that makes {node.name} ({kind}): fxgrow folds into "
        f"norm weights and embedding tables only; pass untie=True or keep the graph "
        f"(as_graph=True)"
    )


def _own(gm, target: str, user: torch.fx.Node) -> None:
    if any(r is not user for r in _readers(gm, target)):
        raise UnsupportedModelError(f"cannot fold a scale into {target}: other ops read it too")


def fold_tie_scales(gm: torch.fx.GraphModule) -> list[str]:
    """Remove every ``fxgrow_tie_scale*`` buffer: fold it into the parameter that makes the
    scaled activation.  Returns the parameters changed (the graph is recompiled)."""
    done = []
    for node in list(gm.graph.nodes):
        if node.op != "get_attr" or not str(node.target).startswith("fxgrow_tie_scale"):
            continue
        scale = _get(gm, node.target)
        for mul in list(node.users):
            if not _calls(mul, "mul") or mul.args[1] is not node:
                raise UnsupportedModelError(f"unexpected use of {node.target} by {mul.name}")
            act = mul.args[0]
            if scale.dim() != 1:
                raise UnsupportedModelError(
                    f"{node.target} scales an axis other than the last; pass untie=True"
                )
            fold_scale(gm, act, scale)
            mul.replace_all_uses_with(act)
            gm.graph.erase_node(mul)
        gm.graph.erase_node(node)
        delattr(gm, node.target)
        done.append(node.target)
    if done:
        gm.graph.lint()
        gm.recompile()
    return done


def rescale_width_constant(gm: torch.fx.GraphModule, old: int, new: int) -> int:
    """Constants ``old ** -0.5`` a class computes from its width (T5 scales the decoder
    output by ``d_model ** -0.5`` before the tied head) set to ``new ** -0.5``, the ratio
    folded into what they multiply: the graph computes the same and matches a model built
    with width ``new``.  Returns how many were changed."""
    if old == new:
        return 0
    c_old, c_new = old**-0.5, new**-0.5
    done = 0
    for n in list(gm.graph.nodes):
        if not _calls(n, "mul") or len(n.args) != 2:
            continue
        k = next(
            (
                i
                for i, a in enumerate(n.args)
                if isinstance(a, float) and abs(a - c_old) <= 1e-12 * c_old
            ),
            None,
        )
        if k is None or not isinstance(n.args[1 - k], torch.fx.Node):
            continue
        fold_scale(gm, n.args[1 - k], torch.tensor(c_old / c_new, dtype=torch.float64))
        args = list(n.args)
        args[k] = c_new
        n.args = tuple(args)
        done += 1
    if done:
        gm.recompile()
    return done


def scale_constant(gm: torch.fx.GraphModule, target: str, new: torch.Tensor) -> None:
    """Set buffer ``target`` (a constant some op multiplies by) to ``new`` and fold
    ``old / new`` into what it multiplies, so the graph computes the same."""
    old = _get(gm, target)
    ratio = (old.double() / new.double()).to(torch.float64)
    uses = [
        u
        for n in gm.graph.nodes
        if n.op == "get_attr" and n.target == target
        for u in _users_through(n)
    ]
    for u in uses:
        if not _calls(u, "mul"):
            raise UnsupportedModelError(
                f"{target} changes with the config and is used by {u.name} ({u.target}), not "
                f"a multiplication: fxgrow cannot compensate it"
            )
        other = u.args[0] if _attr(gm, u.args[1]) == target else u.args[1]
        if not isinstance(other, torch.fx.Node):
            raise UnsupportedModelError(
                f"{target} changes with the config and {u.name} multiplies it by a constant: "
                f"fxgrow cannot compensate it"
            )
        fold_scale(gm, other, ratio.reshape(()) if ratio.numel() == 1 else ratio)
    with torch.no_grad():
        old.copy_(new.to(old.dtype))
