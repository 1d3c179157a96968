"""What a drawing shows, independent of Graphviz: items (fx nodes or folded modules), the
edges between them with the channel groups they carry, module clusters and the legend.

An edge carries the tensor its source produces; it is coloured by the channel groups on that
tensor's axes (``analysis.state.values[node]`` holds one layout per axis, and
``spaces.roots(layout)`` names the groups' classes).  In a before/after view the drawn graph is
the student's: its groups are matched to the teacher's by name (then by shared parameters),
so a widened group keeps its colour and is labelled ``old → new`` where it starts."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..analysis import Analysis
from ..analysis.layout import Blocker
from ..analysis.values import TensorInfo
from ..errors import InputError
from .palette import palette

# collapse="auto" folds nothing while a graph has at most AUTO_ITEMS nodes and AUTO_EDGES edges;
# beyond that it folds at the deepest module depth that leaves at most FOLDED_ITEMS boxes and
# FOLDED_EDGES edges (dense connectivity, as in DenseNet, makes edges the limit)
AUTO_ITEMS, AUTO_EDGES = 120, 200
FOLDED_ITEMS, FOLDED_EDGES = 120, 200


@dataclass(eq=False)
class DGroup:
    """A channel group as drawn: its colour and, in a before/after view, its old width."""

    index: int
    name: str
    colour: str
    width: int                      # width in the drawn graph
    old: int | None                 # the teacher's width; None for a group new in the student
    blockers: tuple[Blocker, ...] = ()

    @property
    def widenable(self) -> bool:
        return not self.blockers

    @property
    def fixed(self) -> bool:
        return bool(self.blockers) and all(b.kind in ("boundary", "structure")
                                           for b in self.blockers)

    @property
    def changed(self) -> bool:
        return self.old is not None and self.old != self.width

    @property
    def change(self) -> str:
        """``64 → 96`` (the label of a widened group)."""
        return f"{self.old} → {self.width}"

    @property
    def status(self) -> str:
        if self.old is None:
            return "new"
        if not self.blockers:
            return "widenable"
        if self.fixed:
            return "fixed (" + ", ".join(dict.fromkeys(b.label for b in self.blockers)) + ")"
        b = next(b for b in self.blockers if b.kind not in ("boundary", "structure"))
        return f"blocked by {b.node}"

    def describe(self) -> str:
        width = self.change if self.changed else str(self.width)
        return f"{self.name}: {width} channels, {self.status}"


@dataclass
class Item:
    """One drawn box: an fx node, or a module folded into one box."""

    id: str
    kind: str                       # "node" | "box" | "input" | "output"
    title: str
    subtitle: str
    shape: str
    ancestors: tuple[str, ...]      # module paths of the clusters around it, outermost first
    nodes: list[str]
    out_groups: list[DGroup] = field(default_factory=list)
    inner_groups: list[DGroup] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)
    inserted: int = 0               # how many of its fx nodes the student added
    tooltip: str = ""


@dataclass
class Edge:
    src: str
    dst: str
    groups: list[DGroup]
    labels: list[DGroup] = field(default_factory=list)  # groups labelled old → new here
    names: list[DGroup] = field(default_factory=list)   # groups labelled by name here
    tooltip: str = ""


@dataclass
class Scene:
    title: str
    items: list[Item]
    edges: list[Edge]
    groups: list[DGroup]
    clusters: dict[str, str]        # module path -> cluster label
    before_after: bool = False
    folded: list[str] = field(default_factory=list)


# -- reading the analysis ------------------------------------------------------------------------

def node_roots(analysis: Analysis) -> dict[str, list[int]]:
    """fx node name -> roots of the visible channel groups on its output, in axis order."""
    sp = analysis.state.spaces
    visible = {g.root for g in analysis.groups}
    out: dict[str, list[int]] = {}
    for node, value in analysis.state.values.items():
        roots: list[int] = []
        for leaf in pytree.tree_leaves(value, is_leaf=lambda v: isinstance(v, TensorInfo)):
            if isinstance(leaf, TensorInfo):
                for lay in leaf.layouts:
                    roots.extend(r for r in sp.roots(lay) if r in visible)
        out[node.name] = list(dict.fromkeys(roots))
    # a model input's channel axis is fixed (no class of its own); show the groups it feeds,
    # those blocked by that input (conv1[in])
    for g in analysis.groups:
        for b in g.blockers:
            if b.kind == "boundary" and b.node in out and g.root not in out[b.node]:
                node = next((n for n in analysis.state.values if n.name == b.node), None)
                if node is not None and node.op == "placeholder":
                    out[b.node].append(g.root)
    return out


def blockers_by_node(analysis: Analysis) -> dict[str, list[Blocker]]:
    """fx node name -> the blockers it causes to channel groups (ops fxgrow cannot widen
    through; not the model's boundaries nor spatial axes).  Unknown ops that touch no channel
    group (mask and position arithmetic) are not blockers of anything."""
    found: dict[str, list[Blocker]] = {}
    for g in analysis.groups:
        for b in g.blockers:
            if b.kind not in ("boundary", "structure"):
                found.setdefault(b.node, []).append(b)
    return {k: list(dict.fromkeys(v)) for k, v in found.items()}


def teacher_groups(analysis: Analysis) -> tuple[list[DGroup], dict[int, DGroup]]:
    colours = palette(len(analysis.groups))
    groups = [DGroup(i, g.name, colours[i], g.width, g.width, g.blockers)
              for i, g in enumerate(analysis.groups)]
    return groups, {g.root: d for g, d in zip(analysis.groups, groups)}


def matched_groups(teacher: Analysis, student: Analysis) -> tuple[list[DGroup], dict[int, DGroup]]:
    """The student's groups with the teacher's colours: matched by name, then by a parameter
    axis both share; unmatched groups (inside inserted layers) get colours of their own."""
    t_groups, _ = teacher_groups(teacher)
    by_name = {g.name: d for g, d in zip(teacher.groups, t_groups)}
    by_member: dict[tuple, DGroup] = {}
    for g, d in zip(teacher.groups, t_groups):
        for m in g.members:
            if m.kind in ("parameter", "buffer"):
                by_member.setdefault((m.target, m.axis, m.role), d)
    extra = palette(len(t_groups) + len(student.groups))[len(t_groups):]
    out: dict[int, DGroup] = {}
    drawn: list[DGroup] = []
    used: set[int] = set()
    for g in student.groups:
        t = by_name.get(g.name)
        if t is None or t.index in used:
            t = next((by_member[(m.target, m.axis, m.role)] for m in g.members
                      if (m.target, m.axis, m.role) in by_member
                      and by_member[(m.target, m.axis, m.role)].index not in used), None)
        if t is not None:
            used.add(t.index)
            d = DGroup(t.index, t.name, t.colour, g.width, t.old, t.blockers)
        else:
            d = DGroup(len(t_groups) + len(drawn), g.name, extra.pop(0), g.width, None,
                       g.blockers)
        drawn.append(d)
        out[g.root] = d
    drawn.sort(key=lambda d: d.index)
    return drawn, out


# -- module paths --------------------------------------------------------------------------------

def module_chain(node: torch.fx.Node) -> tuple[list[str], dict[str, str]]:
    """Module paths around ``node`` (outermost first; the node's own module last for a
    call_module) and path -> class name, from ``nn_module_stack`` or the call_module target."""
    stack = node.meta.get("nn_module_stack") or {}
    paths: list[str] = []
    types: dict[str, str] = {}
    for key, value in stack.items():
        path, kind = (value if isinstance(value, tuple) and len(value) == 2 else (key, None))
        if not isinstance(path, str) or not path:
            continue
        paths.append(path)
        types[path] = _class_name(kind)
    if node.op == "call_module" and isinstance(node.target, str):
        if not paths:
            parts = node.target.split(".")
            paths = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
        elif paths[-1] != node.target:
            paths.append(node.target)
    return list(dict.fromkeys(paths)), types


def _class_name(kind: Any) -> str:
    if kind is None:
        return ""
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).rpartition(".")[2].strip("'>")


def _depth(path: str) -> int:
    return path.count(".") + 1


# -- labels ---------------------------------------------------------------------------------------

def shape_text(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "×".join(str(int(n)) for n in value.shape) if value.dim() else "scalar"
    if isinstance(value, torch.Size):
        return "size"
    if isinstance(value, (tuple, list)):
        parts = [t for t in (shape_text(v) for v in value[:4]) if t]
        if len(parts) == 1 and len(value) <= 4:
            return parts[0]
        return "(" + ", ".join(parts) + (", …" if len(value) > 4 else "") + ")"
    if isinstance(value, (int, float, bool, torch.SymInt)):
        return type(value).__name__
    return ""


# ATen ops drawn under the name of the torch function a user wrote
_TORCH_NAMES = {
    "_to_copy": "to", "_unsafe_view": "view", "mm": "matmul", "bmm": "matmul",
    "addmm": "linear", "sym_size": "size", "native_layer_norm": "layer_norm",
    "_native_batch_norm_legit_no_training": "batch_norm", "_native_batch_norm_legit": "batch_norm",
    "native_batch_norm": "batch_norm", "convolution": "conv", "_softmax": "softmax",
    "_log_softmax": "log_softmax", "rsub": "sub", "clone": "contiguous",
    "_scaled_dot_product_flash_attention_for_cpu": "scaled_dot_product_attention",
    "_scaled_dot_product_efficient_attention": "scaled_dot_product_attention",
    "_assert_tensor_metadata": "assert", "scalar_tensor": "tensor", "lift_fresh_copy": "tensor",
}


def torch_name(op: torch._ops.OpOverload) -> str:
    """``aten.add.Tensor`` -> ``add``; ``aten._to_copy.default`` -> ``to``: the name a user
    writes in torch, not the overload's."""
    base = op._schema.name.split("::")[-1]
    return _TORCH_NAMES.get(base, base.lstrip("_"))


def op_text(node: torch.fx.Node, gm: torch.fx.GraphModule) -> tuple[str, str]:
    """(title, subtitle) of an fx node."""
    if node.op == "call_module":
        try:
            kind = type(gm.get_submodule(node.target)).__name__
        except AttributeError:
            kind = "module"
        return str(node.target), kind
    if node.op == "call_method":
        return f".{node.target}()", ""
    if node.op == "call_function":
        target = node.target
        name = getattr(target, "__name__", None) or str(target)
        if isinstance(target, torch._ops.OpOverload):
            return torch_name(target), ""
        return name, ""
    if node.op == "placeholder":
        return str(node.target), "input"
    return node.op, ""


def _relative(path: str, ancestors: Sequence[str]) -> str:
    for a in reversed(ancestors):
        if path.startswith(a + "."):
            return path[len(a) + 1:]
    return path


# -- folding ---------------------------------------------------------------------------------------

def _fold_rule(collapse: Any):
    """collapse -> function(chain) -> folded module path or None."""
    if collapse is None or collapse is False or collapse == 0 or \
            (isinstance(collapse, str) and collapse.lower() in ("", "none", "no", "0")):
        return None
    if isinstance(collapse, bool):
        raise InputError("collapse must be a depth, module prefixes or 'auto', not True")
    if isinstance(collapse, int):
        if collapse < 0:
            raise InputError(f"collapse depth must be >= 0, got {collapse}")
        return lambda chain: next((p for p in chain if _depth(p) >= collapse), None)
    if isinstance(collapse, str):
        if collapse.isdigit():
            return _fold_rule(int(collapse))
        patterns = [p.strip() for p in collapse.split(",") if p.strip()]
    elif isinstance(collapse, Iterable):
        patterns = [str(p) for p in collapse]
    else:
        raise InputError(f"collapse must be a depth, module prefixes or 'auto', got {collapse!r}")
    return lambda chain: next((p for p in chain
                               if any(p == pat or fnmatch.fnmatchcase(p, pat)
                                      for pat in patterns)), None)


def _has_tensor(value: Any) -> bool:
    return any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(value))


def _drawn(node: torch.fx.Node, vals: dict, sizes: bool) -> bool:
    if node.op == "get_attr":
        return False  # parameters and buffers
    if node.op in ("placeholder", "output"):
        return True
    if not node.users and not isinstance(vals.get(node), torch.Tensor):
        return False  # assertions, guards: no value, nobody reads them
    return sizes or _has_tensor(vals.get(node))


def choose_fold(nodes: list[torch.fx.Node], chains: dict, collapse: Any):
    """The fold function for ``collapse``.  "auto": nothing in small graphs; else the deepest
    level of *repeated blocks* (modules with a sibling of the same class, two ops or more
    each) that leaves a drawing of readable size; else the deepest such module depth."""
    if not (isinstance(collapse, str) and collapse.lower() == "auto"):
        return _fold_rule(collapse)
    items, edges = _count(nodes, chains, None)
    if items <= AUTO_ITEMS and edges <= AUTO_EDGES:
        return None
    size: dict[str, int] = {}
    kind: dict[str, str] = {}
    for n in nodes:
        paths, types = chains[n.name]
        for p in paths:
            size[p] = size.get(p, 0) + 1
            kind.setdefault(p, types.get(p, ""))
    siblings: dict[tuple[str, str], list[str]] = {}
    for p, k in size.items():
        if k >= 2 and kind[p]:
            siblings.setdefault((p.rpartition(".")[0], kind[p]), []).append(p)
    repeated: dict[int, set[str]] = {}
    for paths in siblings.values():
        if len(paths) >= 2:
            for p in paths:
                repeated.setdefault(_depth(p), set()).add(p)
    for d in sorted(repeated, reverse=True):
        chosen = repeated[d]
        rule = (lambda chosen: lambda chain: next((p for p in chain if p in chosen), None))(chosen)
        items_d, edges_d = _count(nodes, chains, rule)
        if items_d <= FOLDED_ITEMS and edges_d <= FOLDED_EDGES:
            return rule
    deepest = max((_depth(p) for p in size), default=0)
    for d in range(deepest, 0, -1):
        rule = _fold_rule(d)
        items_d, edges_d = _count(nodes, chains, rule)
        if items_d <= FOLDED_ITEMS and edges_d <= FOLDED_EDGES:
            return rule
    return _fold_rule(1)


def _assign(nodes, chains, rule) -> dict[str, str | None]:
    """fx node name -> folded module path (None: drawn on its own); single-node folds undone."""
    box: dict[str, str | None] = {}
    sizes: dict[str, int] = {}
    for n in nodes:
        p = rule(chains[n.name][0]) if rule and n.op not in ("placeholder", "output") else None
        box[n.name] = p
        if p is not None:
            sizes[p] = sizes.get(p, 0) + 1
    return {k: (p if p is not None and sizes[p] > 1 else None) for k, p in box.items()}


def _count(nodes, chains, rule) -> tuple[int, int]:
    """(items, edges) of the drawing with ``rule``."""
    box = _assign(nodes, chains, rule)
    item = {n: (p or n) for n, p in box.items()}
    edges = {(item[a.name], item[n.name]) for n in nodes for a in n.all_input_nodes
             if a.name in item and item[a.name] != item[n.name]}
    return len(set(item.values())), len(edges)


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

def build(gm: torch.fx.GraphModule, vals: dict, roots: dict[str, list[int]],
          dgroups: dict[int, DGroup], groups: list[DGroup], blockers: dict[str, list[Blocker]],
          *, teacher_names: set[str] | None = None, collapse: Any = None,
          title: str = "", sizes: bool = False) -> Scene:
    nodes = [n for n in gm.graph.nodes if _drawn(n, vals, sizes)]
    chains = {n.name: module_chain(n) for n in nodes}
    types: dict[str, str] = {}
    for paths, t in chains.values():
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
        item = Item(n.name, kind, title_, subtitle, shape_text(vals.get(n)), anc, [n.name],
                    groups_of(n.name), [], list(blockers.get(n.name, ())), int(inserted))
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
            item.inner_groups = [g for g in item.inner_groups
                                 if g.index not in entering.get(item.id, ())]

    # label each widened group once, where it appears: on the first edge out of an item whose
    # inputs do not carry it yet
    incoming: dict[str, set[int]] = {}
    for e in edges:
        incoming.setdefault(e.dst, set()).update(g.index for g in e.groups)
    labelled: set[tuple[str, int]] = set()
    for e in edges:
        for g in e.groups:
            if g.changed and g.index not in incoming.get(e.src, ()) and \
                    (e.src, g.index) not in labelled:
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
    return Scene(title, list(items.values()), edges, groups, clusters,
                 teacher_names is not None, folded)


def _describe(item: Item, gm, vals) -> None:
    lines = []
    if item.kind == "box":
        lines.append(f"{item.title} ({item.subtitle or 'module'}): {len(item.nodes)} ops folded")
        if item.inner_groups:
            lines.append("groups inside: " + ", ".join(g.name for g in item.inner_groups))
    else:
        lines.append(f"{item.nodes[0]}: {item.title}" + (f" ({item.subtitle})" if item.subtitle
                                                          else ""))
        if item.shape:
            lines.append(f"output {item.shape}")
        lines += [g.describe() for g in item.out_groups]
    if item.inserted:
        lines.append("inserted by fxgrow" if item.inserted == len(item.nodes) else
                     f"{item.inserted} of {len(item.nodes)} ops inserted by fxgrow")
    lines += [f"BLOCKS: {b}" for b in item.blockers]
    item.tooltip = "\n".join(lines)


def _clusters(items: Iterable[Item], types: dict[str, str]) -> dict[str, str]:
    """Module paths that become clusters: those around at least two items."""
    count: dict[str, int] = {}
    for item in items:
        for a in item.ancestors:
            count[a] = count.get(a, 0) + 1
    return {p: (f"{p} · {types[p]}" if types.get(p) else p)
            for p, c in count.items() if c >= 2}
