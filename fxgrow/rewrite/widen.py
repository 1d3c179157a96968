"""Apply a widening plan: new parameters and buffers, module attributes, graph constants.

For every tensor axis along channel spaces, new index j takes old index idx[j]; consumer axes
are divided by the replication count cnt[j].  The student is a deep copy of the graph module
whose parameters are replaced (the teacher's tensors are only read)."""
from __future__ import annotations

import copy

import torch
import torch.fx

from ..analysis import Analysis
from ..analysis.context import CONSUME
from ..plan.index_map import expand
from ..plan.plan import WidenPlan, root_maps


def apply(analysis: Analysis, plan: WidenPlan) -> torch.fx.GraphModule:
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
    with torch.no_grad():
        for target, axes in by_tensor.items():
            old = state.tensors[target]
            new = old.detach()
            for pa in sorted(axes, key=lambda p: p.axis):
                idx, cnt = expand(sp, pa.layout, maps)
                new = new.index_select(pa.axis, idx.to(new.device))
                if CONSUME in pa.roles:
                    shape = [1] * new.dim()
                    shape[pa.axis] = -1
                    new = new / cnt.to(device=new.device, dtype=new.dtype).view(shape)
            if new is old.detach():
                new = new.clone()
            if isinstance(old, torch.nn.Parameter):
                new = torch.nn.Parameter(new.contiguous(), requires_grad=old.requires_grad)
            else:
                new = new.contiguous()
            memo[id(old)] = new
    student = copy.deepcopy(analysis.gm, memo)

    for rule in state.attrs:
        if any(r in maps for lay in rule.layouts for r in sp.roots(lay)):
            setattr(student.get_submodule(rule.module), rule.attr, rule.compute(size))
    touched = False
    for node in student.graph.nodes:
        rule = state.args.get(node.name)
        if rule is not None and any(r in maps for lay in rule.layouts for r in sp.roots(lay)):
            node.args, node.kwargs = rule.compute(size, node.args, dict(node.kwargs))
            touched = True
    if touched:
        student.graph.eliminate_dead_code()
    student.recompile()
    return student
