"""The dependency analysis: walk the graph once, apply each node's op rule, and collect the
channel spaces that must share one replication map."""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.fx
from torch.utils import _pytree as pytree

from . import rules  # noqa: F401  (registers every rule)
from .context import (
    CONSUME,
    SCALE,
    AnalysisState,
    BlockedNode,
    ParamAxis,
    RuleContext,
    RuleError,
    TiedContraction,
)
from .layout import Blocker, Fixed
from .rules.registry import has_trait, lookup
from .values import TENSOR_METADATA, SizeInfo, TensorInfo


def describe(node: torch.fx.Node, module: Any = None) -> str:
    """A short, user-facing name of what a node calls."""
    if node.op == "call_module":
        return f"module {type(module).__module__}.{type(module).__qualname__}"
    if node.op == "call_method":
        return f"method Tensor.{node.target}"
    t = node.target
    mod = getattr(t, "__module__", None) or ""
    return f"function {mod + '.' if mod else ''}{getattr(t, '__name__', repr(t))}"


def run(
    gm: torch.fx.GraphModule, vals: dict, grow_outputs: bool = False, fixed_outputs: int = 0
) -> AnalysisState:
    """Walk the graph once, applying each node's rule: the channel spaces of every value, united
    and blocked, with the table frozen and growth ties settled."""
    state = AnalysisState(gm, vals, grow_outputs=grow_outputs, fixed_outputs=fixed_outputs)
    for node in gm.graph.nodes:
        state.values[node] = _visit(state, node)
    _block_unless_structure(state)
    _finish_params(state)
    state.spaces.freeze()
    state.spaces.settle_ties()
    return state


def _block_unless_structure(state: AnalysisState) -> None:
    """The deferred op blockers (``RuleContext.block_unless_structure``), on the classes
    that no structure blocker fixes."""
    sp = state.spaces
    for layout, blocker in state.unless_structure:
        for r in sp.roots(layout):
            if blocker not in sp.blockers[r] and not any(
                b.kind == "structure" for b in sp.blockers_of(r)
            ):
                sp.blockers[r].append(blocker)


def _visit(state: AnalysisState, node: torch.fx.Node) -> Any:
    cx = RuleContext(state, node)
    if node.op == "placeholder":
        cause = Blocker(node.name, "model input (fixed boundary)", kind="boundary", side="input")
        return _fixed_values(state.vals.get(node), cause)
    if node.op == "get_attr":
        return _get_attr(cx)
    if node.op == "output":
        cause = Blocker(node.name, "model output (fixed boundary)", kind="boundary", side="output")
        for v in pytree.tree_leaves(cx.value(node.args)):
            if isinstance(v, TensorInfo):
                state.outputs.append(v)
                if not state.grow_outputs or len(state.outputs) <= state.fixed_outputs:
                    for lay in v.layouts:
                        state.spaces.block(lay, cause)
            elif isinstance(v, SizeInfo):
                for lay in v.layouts:
                    state.spaces.block(lay, cause)
        return None
    entry = lookup(node, cx.module)
    if entry is None:
        return unknown_op(
            cx,
            f"no rule for {describe(node, cx.module)}; fxgrow does not know how it treats channels",
        )
    try:
        value = entry.fn(cx)
    except RuleError as e:
        return unknown_op(cx, f"{describe(node, cx.module)}: {e}")
    _check_sizes(cx)
    arg_rule = state.args.get(node.name)
    if arg_rule is not None and cx.handled_layouts:
        # the rewrite replaces the size arguments by constants: it must also run when only the
        # space they were read from grows (see ArgRule)
        arg_rule.layouts = (*arg_rule.layouts, *cx.handled_layouts)
    return value


def unknown_op(cx: RuleContext, reason: str) -> Any:
    """An op fxgrow cannot reason about: every channel space it reads is blocked and what it
    returns is fixed."""
    cx.state.blocked_nodes.append(BlockedNode(cx.node.name, reason))
    for v in pytree.tree_leaves(cx.value((cx.node.args, cx.node.kwargs))):
        if isinstance(v, (TensorInfo, SizeInfo)):
            for lay in v.layouts:
                cx.block(lay, reason)
    return _fixed_values(cx.example(), cx.blocker(reason))


def _fixed_values(example: Any, cause: Blocker) -> Any:
    def conv(v):
        if isinstance(v, torch.Tensor):
            return TensorInfo(tuple(v.shape), tuple((Fixed(int(n), cause),) for n in v.shape))
        return v

    return pytree.tree_map(conv, example)


def _get_attr(cx: RuleContext) -> Any:
    """A parameter, buffer or constant tensor read by name: every axis longer than one unit is
    its own channel space until an op couples it; size-1 axes are fixed (they broadcast)."""
    target = cast(str, cx.node.target)  # a get_attr node's target is the attribute's path
    example = cx.example()
    if not isinstance(example, torch.Tensor):
        return example
    canon = cx.state.canonical.get(target, target)
    if canon not in cx.state.tensors:  # a plain tensor attribute: constant, fixed
        return _fixed_values(example, cx.blocker("constant tensor attribute"))
    layouts = []
    for d, n in enumerate(example.shape):
        lay = cx.param(canon, d, None)
        if n == 1:  # it may broadcast wherever it is read directly: it keeps its size
            cx.block(lay, "size-1 axis of a tensor read directly (it may broadcast)", "structure")
        layouts.append(lay)
    return TensorInfo(tuple(example.shape), tuple(layouts))


_NO_SIZE = frozenset({TensorInfo, int, float, bool, str, type(None)})


def _may_hold_size(value: Any) -> bool:
    """False only if ``value`` certainly holds no ``SizeInfo`` (a tensor, a plain constant)."""
    t = type(value)
    if t in _NO_SIZE:
        return False
    return t is SizeInfo or any(isinstance(v, SizeInfo) for v in pytree.tree_leaves(value))


def _check_sizes(cx: RuleContext) -> None:
    """A size read from a channel axis may only flow into size arguments that a rule rewrites;
    anywhere else (arithmetic on tensors, creation ops) the group must keep its width."""
    values = cx.state.values
    # sizes reach a node only through its input nodes: without any, there is nothing to check
    if not any(n not in values or _may_hold_size(values[n]) for n in cx.node.all_input_nodes):
        return
    for v in pytree.tree_leaves(cx.value((cx.node.args, cx.node.kwargs))):
        if isinstance(v, SizeInfo) and id(v) not in cx.handled_sizes:
            for lay in v.layouts:
                cx.block(
                    lay, "uses a size read from a channel axis; it would change with the width"
                )


_METADATA_ATTRS = TENSOR_METADATA | {"shape"}


def _reads_metadata(user: torch.fx.Node, node: torch.fx.Node) -> bool:
    """``user`` reads only ``node``'s metadata (``w.device``, ``w.dtype``, ``w.size(0)``), not
    its values: the parameter is neither copied nor divided there (sizes read from it are
    checked like any other size)."""
    if user.op == "call_function" and user.target is getattr and user.args[0] is node:
        return user.args[1] in _METADATA_ATTRS
    return (
        user.op == "call_method"
        and has_trait(user.target, "reads_metadata")
        and user.args[0] is node
    )


def _finish_params(state: AnalysisState) -> None:
    """Parameters read through get_attr and not contracted are per-channel (copied); a tensor
    axis that is both copied and divided (tied weights) cannot follow one map."""
    by_target: dict[str, list[ParamAxis]] = {}
    for (t, _axis), pa in state.params.items():
        by_target.setdefault(t, []).append(pa)
    for node in state.gm.graph.nodes:
        if node.op != "get_attr":
            continue
        target = state.canonical.get(node.target, node.target)
        for user in node.users:
            if (user, node) not in state.consumed and not _reads_metadata(user, node):
                for pa in by_target.get(target, ()):
                    pa.roles.add(SCALE)
    for pa in state.params.values():
        if not pa.roles:
            pa.roles.add(SCALE)
        if CONSUME in pa.roles and len(pa.roles) > 1:
            # tied weights: one tensor cannot be both copied and divided.  It is copied, and
            # each contraction divides its activation instead (x_j / c(g(j))), which is exact.
            if pa.consumers and all(c.activation is not None for c in pa.consumers):
                pa.roles.discard(CONSUME)
                state.tied_contractions.extend(TiedContraction(pa, c) for c in pa.consumers)
            else:
                state.spaces.block(
                    pa.layout,
                    Blocker(
                        pa.target,
                        "tensor is both copied (producer/per-channel) and divided "
                        "(consumer), and fxgrow cannot find the activation to "
                        "compensate; untie the weights to widen",
                    ),
                )
