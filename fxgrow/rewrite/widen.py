"""Apply a widening plan: new parameters and buffers, module attributes, graph constants.

For every tensor axis along channel spaces, new index j takes old index idx[j]; consumer axes
are multiplied by the share frac[j] of the copied unit (1 / c(g(j)) for an equal split).  The
student is a deep copy of the graph module whose parameters are replaced (the teacher's tensors
are only read).  ``student.meta["fxgrow_expansions"]`` records, per changed tensor, its axes'
index maps and copy/consume roles: what optimizer-state transfer needs."""
from __future__ import annotations

import copy
import operator

import torch
import torch.fx

from ..analysis import Analysis
from ..analysis.context import CONSUME
from ..plan.index_map import expand
from ..plan.plan import WidenPlan, root_maps


def apply(analysis: Analysis, plan: WidenPlan, untie: bool = False) -> torch.fx.GraphModule:
    """The student for ``plan``.  Tied weights (one tensor both copied and divided) stay tied:
    each contraction that would divide them divides its activation instead; with ``untie``
    the contraction gets its own, divided copy of the tensor."""
    state = analysis.state
    sp = state.spaces
    maps = root_maps(analysis, plan)
    widths = {r: m.new for r, m in maps.items()}

    def size(layout) -> int:
        return sp.new_size(layout, widths)

    by_tensor: dict[str, list] = {}
    for pa in state.params.values():
        if any(r in maps for r in sp.roots(pa.layout)):
            by_tensor.setdefault(pa.target, []).append(pa)

    memo: dict[int, torch.Tensor] = {}
    expansions: dict[str, list] = {}
    noise_gen = torch.Generator().manual_seed(plan.seed + 7919)
    with torch.no_grad():
        for target, axes in by_tensor.items():
            old = state.tensors[target]
            new = old.detach()
            record = []
            # index the axis that grows least first: the intermediate copies stay small
            for pa in sorted(axes, key=lambda p: sp.new_size(p.layout, widths) /
                             max(1, sp.size(p.layout))):
                e = expand(sp, pa.layout, maps)
                consume = CONSUME in pa.roles
                record.append((pa.axis, e.index, e.fraction, consume))
                if e.index.numel() == new.shape[pa.axis] and \
                        bool((e.index == torch.arange(e.index.numel())).all()):
                    continue  # this axis's spaces did not grow
                new = new.index_select(pa.axis, e.index.to(new.device))
                shape = [1] * new.dim()
                shape[pa.axis] = -1
                if consume:
                    new.mul_(e.fraction.to(device=new.device, dtype=new.dtype).view(shape))
                elif plan.noise and new.is_floating_point():
                    new.add_(_noise(new, e, pa.axis, plan.noise, noise_gen))
            expansions[target] = sorted(record, key=lambda r: r[0])
            if new.data_ptr() == old.data_ptr():
                new = new.clone()
            if isinstance(old, torch.nn.Parameter):
                new = torch.nn.Parameter(new, requires_grad=old.requires_grad)
            memo[id(old)] = new
    student = copy.deepcopy(analysis.gm, memo)

    _compensate_ties(student, analysis, maps, memo, untie)
    for rule in state.attrs:
        if any(r in maps for lay in rule.layouts for r in sp.roots(lay)):
            setattr(student.get_submodule(rule.module), rule.attr, rule.compute(size))
    touched = False
    for node in student.graph.nodes:
        rule = state.args.get(node.name)
        if rule is not None and any(r in maps for lay in rule.layouts for r in sp.roots(lay)):
            node.args, node.kwargs = rule.compute(size, node.args, dict(node.kwargs))
            touched = True
    if touched or state.ties:
        student.graph.eliminate_dead_code()
    student.recompile()
    student.meta["fxgrow_expansions"] = {
        name: expansions[target] for name, target in state.canonical.items()
        if target in expansions}
    if state.grow_outputs:
        student.meta["fxgrow_output_positions"] = [
            [_first_positions(sp, lay, maps) for lay in info.layouts] for info in state.outputs]
    return student


def _compensate_ties(student, analysis, maps, memo, untie: bool) -> None:
    state, sp = analysis.state, analysis.state.spaces
    nodes = {n.name: n for n in student.graph.nodes}
    for k, (pa, (user, link, act, act_axis)) in enumerate(state.ties):
        if not any(r in maps for r in sp.roots(pa.layout)):
            continue
        frac = expand(sp, pa.layout, maps).fraction
        user_node = nodes[user.name]
        if untie:
            widened = memo[id(state.tensors[pa.target])]
            shape = [1] * widened.dim()
            shape[pa.axis] = -1
            own = torch.nn.Parameter((widened.detach() * frac.to(widened).view(shape)).contiguous())
            if link is None:
                setattr(student.get_submodule(user_node.target), pa.target.rpartition(".")[2], own)
                continue
            direct, g = nodes[link[0].name], nodes[link[1].name]
            name = _untied_name(state, pa.target, user, f"{g.target}_untied{k}")
            for other in student.graph.nodes:  # other readers of that alias keep the tensor
                if other.op == "get_attr" and other.target == name:
                    other.target = pa.target
            _set_attr(student, name, own)
            with student.graph.inserting_before(direct):
                own_node = student.graph.get_attr(name)
            direct.replace_input_with(g, own_node)
            continue
        act_node = nodes[act.name]
        example = state.vals[act]
        like = memo[id(state.tensors[pa.target])]
        scale = frac.to(like.dtype)
        scale = scale.view([-1] + [1] * (example.dim() - 1 - act_axis)).to(like.device)
        n = k
        while hasattr(student, f"fxgrow_tie_scale{n}"):  # a student widened again has some
            n += 1
        name = f"fxgrow_tie_scale{n}"
        student.register_buffer(name, scale)
        with student.graph.inserting_before(user_node):
            factor = student.graph.get_attr(name)
            scaled = student.graph.call_function(operator.mul, (act_node, factor))
        user_node.replace_input_with(act_node, scaled)


def _noise(t: torch.Tensor, e, axis: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Net2Net's symmetry-breaking noise on the copies (positions whose unit has > 1 copy):
    Gaussian with std ``scale`` times the tensor's std.  It breaks exactness."""
    copies = (e.count > 1).to(t.dtype)
    shape = [1] * t.dim()
    shape[axis] = -1
    std = float(t.float().std()) if t.numel() > 1 else 1.0
    z = torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t)
    return z * (scale * std) * copies.to(t.device).view(shape)


def _untied_name(state, canonical: str, user: torch.fx.Node, fallback: str) -> str:
    """The consumer's own name for an untied copy: an alias of the tied tensor under the
    consumer's module (``lm_head.weight``), so the state_dict matches an untied model."""
    stack = user.meta.get("nn_module_stack") or {}
    paths = [v[0] for v in stack.values() if isinstance(v, tuple)]
    aliases = [n for n, c in state.canonical.items() if c == canonical and n != canonical]
    for path in reversed(paths):
        for a in aliases:
            if a.rpartition(".")[0] == path:
                return a
    return fallback


def _set_attr(root: torch.nn.Module, qualname: str, value) -> None:
    parent, _, leaf = qualname.rpartition(".")
    module = root.get_submodule(parent) if parent else root
    if isinstance(value, torch.nn.Parameter):
        module.register_parameter(leaf, value)
    else:
        setattr(module, leaf, value)


def _first_positions(sp, layout, maps) -> torch.Tensor | None:
    """For each old position of an output axis, the first new position that copies it."""
    idx = expand(sp, layout, maps).index
    n = sp.size(layout)
    if idx.numel() == n:
        return None
    first = torch.full((n,), -1, dtype=torch.long)
    positions = torch.arange(idx.numel())
    first.scatter_reduce_(0, idx, positions, reduce="amin", include_self=False)
    return first
