"""Widths inside the blocks, planned on the two-block capture of ``reduced``.

``plan_checkpoint`` widens with equal splits and then draws every map afresh (``balanced``):
the maps depend only on the changes' order and sizes, never on the maps ``fxgrow.plan``
drew.  A group that lies inside one block (a Llama block's MLP or attention heads) is block
1's group renamed, so the full model's plan is each block's request planned on block 1, the
changes laid out block after block (the full analysis orders its groups by graph position),
and the maps drawn over that list.  Each block's recipes are block 1's for that block's maps,
renamed.  Checked, not assumed: each request planned on both blocks of the capture changes
the same groups of each and nothing outside them, block 0's groups precede block 1's, every
recipe reads block 1's tensors only, and no widened axis is tied or contracted between two
activations (those the full analysis handles, or refuses with its own message).

Invariant: when ``block_widths`` answers, the plan and recipes are those of
``plan_checkpoint``'s full analysis (``balanced(fxgrow.plan(...))``, ``tensor_recipes``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..errors import FxgrowError
from ..planning.plan import GroupChange, WidenPlan, check_plan, root_maps
from ..rewrite.recipe import TensorRecipe, tensor_recipes
from .plan import balanced
from .reduced import TwoBlocks, _rename


def _inside(name: str, path: str) -> bool:
    return name == path or name.startswith(path + ".")


def _full_names(tb: TwoBlocks) -> list[str]:
    """The full model's group and module names, as the two-block analysis shows them."""
    a, (p0, p1) = tb.analysis, (tb.block(0), tb.block(1))
    out = []
    for x in [g.name for g in a.groups] + list(a.state.modules):
        if _inside(x, p0):
            continue
        out += [tb.to_block(x, k) for k in range(tb.n)] if _inside(x, p1) else [x]
    return out


def _block_of(tb: TwoBlocks, name: str) -> int | None:
    parent = tb.stage.parent + "."
    if not name.startswith(parent):
        return None
    head = name[len(parent) :].split(".", 1)[0]
    return int(head) if head.isdigit() and int(head) < tb.n else None


def _block_changes(
    tb: TwoBlocks, request: Mapping[str, int], seed: int
) -> list[GroupChange] | None:
    """Block 1's changes for ``request`` (names in block 1), or None where the request is not
    block 1's alone or block 0 would not change alike (the full analysis plans it)."""
    import fxgrow

    a, p0, p1 = tb.analysis, tb.block(0), tb.block(1)
    both = {**{_rename(k, p1, p0): w for k, w in request.items()}, **request}
    plan = fxgrow.plan(a, widths=both, seed=seed, split="equal")
    c0 = [c for c in plan.changes if _inside(c.group, p0)]
    c1 = [c for c in plan.changes if _inside(c.group, p1)]
    if len(c0) + len(c1) != len(plan.changes):
        return None  # a group outside the blocks grows too
    if [(_rename(c.group, p0, p1), c.old_width, c.new_width) for c in c0] != [
        (c.group, c.old_width, c.new_width) for c in c1
    ]:
        return None  # block 0 grows otherwise
    if any(
        c.map.fractions is not None or c.map.new == c.map.old or c.init != "replicate" for c in c1
    ):
        return None  # a map that balanced() keeps
    return c1


def block_widths(
    tb: TwoBlocks, widths: Mapping[str, int], seed: int = 0
) -> tuple[WidenPlan, dict[str, TensorRecipe]] | None:
    """The full model's balanced equal-split plan for ``widths`` (group or module names, globs
    allowed) and its recipes by tensor name, or None (then the caller analyses the full
    model, which also gives the errors of a bad request)."""
    from .hf import expand_widths

    a, p0, p1 = tb.analysis, tb.block(0), tb.block(1)
    order = (
        [i for i, g in enumerate(a.groups) if _inside(g.name, p0)],
        [i for i, g in enumerate(a.groups) if _inside(g.name, p1)],
    )
    if order[0] and order[1] and max(order[0]) > min(order[1]):
        return None
    try:
        wanted = expand_widths(widths, _full_names(tb)) or {}
    except FxgrowError:  # not planned here: the full analysis decides
        return None
    per_block: dict[int, dict[str, int]] = {}
    for key, w in wanted.items():
        k = _block_of(tb, key)
        if k is None or key == tb.block(k):
            return None  # outside the blocks, or a whole block: groups that span them
        per_block.setdefault(k, {})[_rename(key, tb.block(k), p1)] = w
    cache: dict[frozenset, list[GroupChange] | None] = {}
    changes: list[GroupChange] = []
    try:
        for k in sorted(per_block):
            req = frozenset(per_block[k].items())
            if req not in cache:
                cache[req] = _block_changes(tb, per_block[k], seed)
            block = cache[req]
            if block is None:
                return None
            changes += [dataclasses.replace(c, group=tb.to_block(c.group, k)) for c in block]
    except FxgrowError:  # not planned here: the full analysis decides
        return None
    plan = balanced(WidenPlan(tuple(changes), seed, "equal"), seed)
    recipes: dict[str, TensorRecipe] = {}
    state, sp = a.state, a.state.spaces
    for k in sorted(per_block):
        mine = WidenPlan(
            tuple(
                dataclasses.replace(c, group=_rename(c.group, tb.block(k), p1))
                for c in plan.changes
                if _inside(c.group, tb.block(k))
            ),
            seed,
            "equal",
        )
        try:
            check_plan(a, mine)
            maps = root_maps(a, mine)
            if any(
                any(r in maps for r in sp.roots(t.param.layout)) for t in state.tied_contractions
            ):
                return None
            if any(any(r in maps for r in sp.roots(rec.layout)) for rec in state.scales):
                return None
            made = tensor_recipes(a, mine)
        except FxgrowError:  # not planned here: the full analysis decides
            return None
        for target, recipe in made.items():
            if not _inside(target, p1):
                return None
            name = tb.to_block(target, k)
            recipes[name] = dataclasses.replace(recipe, target=name)
    return plan, recipes
