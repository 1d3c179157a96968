"""What a drawing shows, independent of Graphviz: items (fx nodes or folded modules), the
edges between them with the channel groups they carry, module clusters and the legend.

An edge carries the tensor its source produces; it is coloured by the channel groups on that
tensor's axes (``analysis.state.values[node]`` holds one layout per axis, and
``spaces.roots(layout)`` names the groups' classes).  In a before/after view the drawn graph is
the student's: its groups are the teacher's at the widths of its growth record, or, for a
student with inserted layers, matched to the teacher's by name (then by shared parameters),
so a widened group keeps its colour and is labelled ``old → new`` where it starts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.fx

from ..analysis.layout import Blocker
from .elements import DGroup, Edge, Item, Scene
from .fold import (  # noqa: F401
    AUTO_EDGES,
    AUTO_ITEMS,
    FOLDED_EDGES,
    FOLDED_ITEMS,
    _assign,
    _depth,
    _drawn,
    choose_fold,
    module_chain,
)
from .groups import (  # noqa: F401
    blockers_by_node,
    matched_groups,
    node_roots,
    recorded_groups,
    teacher_groups,
)
from .labels import _relative, op_text, shape_text, torch_name  # noqa: F401

# -- input plumbing ------------------------------------------------------------------------------

NAMED_GROUPS = 24  # beyond this many groups each is also labelled by name where it starts
PLUMBING = "inputs: masks, positions, flags"
PLUMBING_MIN = 2  # fold the plumbing into one box when it has at least this many nodes


def input_plumbing(gm: torch.fx.GraphModule, drawn: set[str], groups_of) -> list[str]:
    """Drawn nodes that only prepare side inputs: computed from graph inputs and constants
    alone without touching a channel group (attention masks, position ids, flags), the inputs
    that feed nothing else, and optional inputs (arguments with a default, such as timm's
    ``attn_mask=None`` / ``is_causal=False``) that carry no channel group.  Invariant: no node
    carrying a channel group is plumbing."""
    side: set[str] = set()
    for n in gm.graph.nodes:
        if n.op in ("placeholder", "get_attr"):
            continue
        if n.op == "output" or groups_of(n.name):
            continue
        if all(a.op in ("placeholder", "get_attr") or a.name in side for a in n.all_input_nodes):
            side.add(n.name)
    for n in gm.graph.nodes:
        if n.op != "placeholder" or groups_of(n.name):
            continue
        optional = bool(n.args)  # an argument with a default: a mask or flag left as it is
        if n.users and (optional or all(u.name in side for u in n.users)):
            side.add(n.name)
    # only what feeds the rest of the graph through other plumbing or directly: all of it
    return [n.name for n in gm.graph.nodes if n.name in side and n.name in drawn]


# -- the scene ------------------------------------------------------------------------------------


def build(
    gm: torch.fx.GraphModule,
    vals: dict,
    roots: dict[str, list[int]],
    dgroups: dict[int, DGroup],
    groups: list[DGroup],
    blockers: dict[str, list[Blocker]],
    *,
    teacher_names: set[str] | None = None,
    collapse: Any = None,
    title: str = "",
    sizes: bool = False,
) -> Scene:
    """The scene of ``gm``: one item per drawn node or folded module (``collapse``), edges
    coloured by the groups on each source's output, nodes the teacher lacks marked inserted."""
    nodes = [n for n in gm.graph.nodes if _drawn(n, vals, sizes)]
    chains = {n.name: module_chain(n) for n in nodes}
    types: dict[str, str] = {}
    for _paths, t in chains.values():
        types.update({k: v for k, v in t.items() if v})
    rule = choose_fold(nodes, chains, collapse)
    box_of = _assign(nodes, chains, rule)

    def groups_of(name: str) -> list[DGroup]:
        return list(dict.fromkeys(dgroups[r] for r in roots.get(name, ()) if r in dgroups))

    plumbing = input_plumbing(gm, {n.name for n in nodes}, groups_of)
    if len(plumbing) >= PLUMBING_MIN:
        for name in plumbing:
            box_of[name] = PLUMBING

    items: dict[str, Item] = {}
    item_of: dict[str, str] = {}
    for n in nodes:
        paths = chains[n.name][0]
        inserted = teacher_names is not None and n.name not in teacher_names
        p = box_of[n.name]
        if p is not None:
            key = f"box:{p}"
            item = items.get(key)
            if item is None:
                anc = tuple(q for q in paths if _depth(q) < _depth(p) and p.startswith(q + "."))
                if p == PLUMBING:
                    anc = ()
                item = items[key] = Item(key, "box", p, types.get(p, ""), "", anc, [])
            item.nodes.append(n.name)
            item.inserted += inserted
            item_of[n.name] = key
            for g in groups_of(n.name):
                if g not in item.inner_groups:
                    item.inner_groups.append(g)
            item.blockers.extend(blockers.get(n.name, ()))
            continue
        own = n.op == "call_module"
        anc = tuple(paths[:-1] if own and paths else paths)
        title_, subtitle = op_text(n, gm)
        if own:
            title_ = _relative(title_, anc)
        kind = {"placeholder": "input", "output": "output"}.get(n.op, "node")
        item = Item(
            n.name,
            kind,
            title_,
            subtitle,
            shape_text(vals.get(n)),
            anc,
            [n.name],
            groups_of(n.name),
            [],
            list(blockers.get(n.name, ())),
            int(inserted),
        )
        items[n.name] = item
        item_of[n.name] = n.name

    # edges between items, merged; a box's output shape is what leaves it
    merged: dict[tuple[str, str], Edge] = {}
    for n in nodes:
        for a in n.all_input_nodes:
            if a.name not in item_of:
                continue
            s, d = item_of[a.name], item_of[n.name]
            if s == d:
                continue
            e = merged.get((s, d))
            if e is None:
                e = merged[(s, d)] = Edge(s, d, [])
            for g in groups_of(a.name):
                if g not in e.groups:
                    e.groups.append(g)
            src = items[s]
            if src.kind == "box":
                for g in groups_of(a.name):
                    if g not in src.out_groups:
                        src.out_groups.append(g)
                shape = shape_text(vals.get(a))
                if shape and shape not in src.shape.split(" | "):
                    src.shape = f"{src.shape} | {shape}" if src.shape else shape
    edges = list(merged.values())
    entering: dict[str, set[int]] = {}
    for e in edges:
        entering.setdefault(e.dst, set()).update(g.index for g in e.groups)
    for item in items.values():  # a box shows the groups made inside it, not those passing
        if item.kind == "box":
            item.inner_groups = [
                g for g in item.inner_groups if g.index not in entering.get(item.id, ())
            ]

    # label each widened group once, where it appears: on the first edge out of an item whose
    # inputs do not carry it yet
    incoming: dict[str, set[int]] = {}
    for e in edges:
        incoming.setdefault(e.dst, set()).update(g.index for g in e.groups)
    labelled: set[tuple[str, int]] = set()
    for e in edges:
        for g in e.groups:
            if (
                g.changed
                and g.index not in incoming.get(e.src, ())
                and (e.src, g.index) not in labelled
            ):
                labelled.add((e.src, g.index))
                e.labels.append(g)
        e.tooltip = "\n".join(g.describe() for g in e.groups) or "no channel group"
    # with many groups colours alone are hard to tell apart: name each group where it starts
    if len(groups) > NAMED_GROUPS:
        named: set[int] = {g.index for e in edges for g in e.labels}
        for e in edges:
            for g in e.groups:
                if g.index not in named and g.index not in incoming.get(e.src, ()):
                    named.add(g.index)
                    e.names.append(g)

    for item in items.values():
        _describe(item, gm, vals)
    plumbing_box = items.get(f"box:{PLUMBING}")
    if plumbing_box is not None:
        fed = list(dict.fromkeys(items[e.dst].title for e in edges if e.src == plumbing_box.id))
        plumbing_box.tooltip += "\nfeeds " + ", ".join(fed[:12]) + (" …" if len(fed) > 12 else "")
    clusters = _clusters(items.values(), types)
    folded = sorted({p for p in box_of.values() if p and p != PLUMBING})
    return Scene(
        title, list(items.values()), edges, groups, clusters, teacher_names is not None, folded
    )


def _describe(item: Item, gm, vals) -> None:
    lines = []
    if item.kind == "box":
        lines.append(f"{item.title} ({item.subtitle or 'module'}): {len(item.nodes)} ops folded")
        if item.inner_groups:
            lines.append("groups inside: " + ", ".join(g.name for g in item.inner_groups))
    else:
        lines.append(
            f"{item.nodes[0]}: {item.title}" + (f" ({item.subtitle})" if item.subtitle else "")
        )
        if item.shape:
            lines.append(f"output {item.shape}")
        lines += [g.describe() for g in item.out_groups]
    if item.inserted:
        lines.append(
            "inserted by fxgrow"
            if item.inserted == len(item.nodes)
            else f"{item.inserted} of {len(item.nodes)} ops inserted by fxgrow"
        )
    lines += [f"BLOCKS: {b}" for b in item.blockers]
    item.tooltip = "\n".join(lines)


def _clusters(items: Iterable[Item], types: dict[str, str]) -> dict[str, str]:
    """Module paths that become clusters: those around at least two items."""
    count: dict[str, int] = {}
    for item in items:
        for a in item.ancestors:
            count[a] = count.get(a, 0) + 1
    return {p: (f"{p} · {types[p]}" if types.get(p) else p) for p, c in count.items() if c >= 2}
