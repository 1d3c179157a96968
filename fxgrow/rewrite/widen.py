"""Apply a widening plan: new parameters and buffers, module attributes, graph constants.

For every tensor axis along channel spaces, new index j takes old index idx[j]; consumer axes
are multiplied by the share frac[j] of the copied unit (1 / c(g(j)) for an equal split).  The
student is what ``copy.deepcopy`` of the graph module gives with the widened tensors swapped in
through its memo; the submodules are copied by ``_copy`` (the same result, without deepcopy's
generic machinery).  Every student tensor is a new tensor: the teacher's are only read, and
never shared.  The student's growth record (``fxgrow.growth``) holds, per changed tensor, its
axes' index maps and copy/consume roles: what optimizer-state transfer needs."""

from __future__ import annotations

import copy
import copyreg
from collections import OrderedDict
from typing import Any

import torch
import torch.fx

from ..analysis import Analysis
from ..growth import update_growth_record
from ..planning.index_map import expand
from ..planning.placement import placed_student
from ..planning.plan import WidenPlan, root_maps
from .contraction import insert_scale, insert_scales
from .dead_code import eliminate_dead_code, unused_nodes
from .recipe import Scratch, apply_recipe, tensor_recipes


def apply(analysis: Analysis, plan: WidenPlan, untie: bool = False) -> torch.fx.GraphModule:
    """The student for ``plan``.  Tied weights (one tensor both copied and divided) stay tied:
    each contraction that would divide them divides its activation instead; with ``untie``
    the contraction gets its own, divided copy of the tensor."""
    state = analysis.state
    sp = state.spaces
    maps = root_maps(analysis, plan)
    widths = {r: m.new for r, m in maps.items()}
    placed = placed_student(analysis, plan.placements)

    def size(layout) -> int:
        if placed is not None and placed.touches(sp, layout):
            return placed.size(sp, layout)
        return sp.new_size(layout, widths)

    def grows(layouts) -> bool:
        return any(
            r in maps or (placed is not None and r in placed.roots)
            for lay in layouts
            for r in sp.roots(lay)
        )

    recipes = tensor_recipes(analysis, plan)
    jobs = [(state.tensors[target], recipe) for target, recipe in recipes.items()]
    memo: dict[int, Any] = {}
    noise_gen = torch.Generator().manual_seed(plan.seed + 7919)

    def noise(t: torch.Tensor, step) -> torch.Tensor:
        return _noise(t, step.expansion, step.axis, plan.noise, noise_gen)

    # every index map is made first (tensor_recipes), then the student's tensors one after the
    # other (small allocations between them would scatter them in memory)
    scratch = Scratch(jobs)
    for old, recipe in jobs:
        new = apply_recipe(recipe, old, scratch=scratch, noise=noise if plan.noise else None)
        if isinstance(old, torch.nn.Parameter):
            new = torch.nn.Parameter(new, requires_grad=old.requires_grad)
        memo[id(old)] = new
    for child in analysis.gm._modules.values():  # the module tree, into the memo
        _copy(child, memo)
    student = copy.deepcopy(analysis.gm, memo)
    ran_for_effect = unused_nodes(student.graph)

    _compensate_tied(student, analysis, maps, memo, untie)
    scaled = insert_scales(student, analysis, maps)
    for rule in state.attrs:
        if grows(rule.layouts):
            setattr(student.get_submodule(rule.module), rule.attr, rule.compute(size))
    touched = False
    for node in student.graph.nodes:
        arg_rule = state.args.get(node.name)
        if arg_rule is not None and grows(arg_rule.layouts):
            node.args, node.kwargs = arg_rule.compute(size, node.args, dict(node.kwargs))
            touched = True
    if touched or state.tied_contractions or scaled:
        eliminate_dead_code(student.graph, keep=ran_for_effect)
        student.recompile()  # deepcopy compiled the copied graph; recompile only if it changed
    update_growth_record(
        student,
        expansions={
            name: recipes[target].record
            for name, target in state.canonical.items()
            if target in recipes
        },
        output_positions=tuple(
            tuple(_first_positions(sp, lay, maps) for lay in info.layouts) for info in state.outputs
        )
        if state.grow_outputs
        else None,
        group_widths={g.name: maps[g.root].new for g in analysis.groups if g.root in maps},
    )
    return student


# -- copying the module tree --------------------------------------------------------------------
_ATOMIC = frozenset({type(None), int, float, bool, str})  # deepcopy returns these as they are
_PLAIN_CLASSES: dict[type, bool] = {}


def _plain_reduce(x: torch.nn.Module) -> bool:
    """``copy.deepcopy(x)`` takes the default route for the module ``x``:
    ``object.__reduce_ex__(4)`` (new object, ``__getstate__``, deep-copied state,
    ``__setstate__``)."""
    cls = type(x)
    plain = _PLAIN_CLASSES.get(cls)
    if plain is None:
        plain = _PLAIN_CLASSES[cls] = (
            not hasattr(cls, "__deepcopy__")
            and cls.__reduce_ex__ is object.__reduce_ex__
            and cls.__reduce__ is object.__reduce__
            and not hasattr(cls, "__getnewargs_ex__")
            and not hasattr(cls, "__getnewargs__")
            and not hasattr(cls, "__slots__")
        )
    # an instance may carry its own __deepcopy__ (Module.__getattr__ also reads these dicts)
    return (
        plain
        and cls not in copyreg.dispatch_table
        and not any(
            "__deepcopy__" in d for d in (x.__dict__, x._parameters, x._buffers, x._modules)
        )
    )


def _copy(x: Any, memo: dict) -> Any:
    """``copy.deepcopy(x, memo)``, with deepcopy's own steps done inline for the objects a module
    tree is made of (modules, their attribute dicts, hook dicts, atoms); anything else goes to
    ``copy.deepcopy`` itself.  Same result, same memo (so objects shared in the teacher stay
    shared in the copy, and the widened tensors in ``memo`` are used)."""
    cls = type(x)
    if cls in _ATOMIC:
        return x
    y = memo.get(id(x), memo)
    if y is not memo:
        return y
    if isinstance(x, torch.nn.Module) and _plain_reduce(x):
        module_cls = type(x)  # ``cls`` as a Module class: its ``__new__`` is object's (or its own)
        y = module_cls.__new__(module_cls)
        memo[id(x)] = y
        _keep_alive(x, memo)
        state = x.__getstate__()
        if type(state) is dict:
            state = {
                k if type(k) is str else _copy(k, memo): v if type(v) in _ATOMIC else _copy(v, memo)
                for k, v in state.items()
            }
        else:
            state = copy.deepcopy(state, memo)
        y.__setstate__(state)
        return y
    if cls is dict or cls is OrderedDict and not x.__dict__:
        y = cls()
        memo[id(x)] = y
        _keep_alive(x, memo)
        for k, v in x.items():
            y[_copy(k, memo)] = _copy(v, memo)
        return y
    if cls is set and all(type(v) in _ATOMIC for v in x):
        y = set(x)  # as deepcopy builds it (same insertion order)
        memo[id(x)] = y
        _keep_alive(x, memo)
        return y
    return copy.deepcopy(x, memo)


def _keep_alive(x: Any, memo: dict) -> None:
    """As deepcopy does: the originals stay alive while the memo lives (their ids stay unique)."""
    keep = memo.get(id(memo))
    if keep is None:
        memo[id(memo)] = [x]
    else:
        keep.append(x)


def _compensate_tied(student, analysis, maps, memo, untie: bool) -> None:
    state, sp = analysis.state, analysis.state.spaces
    nodes = {n.name: n for n in student.graph.nodes}
    for k, (pa, (user, link, act, act_axis)) in enumerate(state.tied_contractions):
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
        insert_scale(student, "fxgrow_tie_scale", k, scale, user_node, act_node)


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
