"""Residual blocks and stages, found in the graph.

A *block* is the set of nodes recorded under one module path (fx's ``nn_module_stack``) that
hands exactly one tensor O to the rest of the graph.  It is *residual* when one of the tensors
it reads, I, has O's shape and is added back to a branch computed inside (other inputs, such
as attention masks or rotary tables, are shared and reused by copies).  A residual block may
hand on side results that do not depend on I (T5's first block computes the position bias
the later blocks read); copies leave them to the original.

By default the add of I must be recorded under the block's own path.  With ``nested=True``
it may sit in a descendant (T5's ``T5Block`` adds I inside ``layer.0``), for any module that
is not a plain container (``Sequential``, ``ModuleList``): this finds blocks like T5's, but
also makes a stage module whose first block keeps the shape a "block", so ``stages()`` keeps
the strict rule and ``nested`` is the fallback for names the strict rule does not know.

A *stage* is a run of consecutive blocks under one parent module (``layer1`` with
``layer1.0``, ``layer1.1``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast

import torch
import torch.fx

from .rules.registry import has_trait


@dataclass(frozen=True)
class Block:
    """The nodes recorded under one module path that hand exactly one tensor (``output``) on;
    ``residual`` when ``input`` has the output's shape and is added back inside."""

    path: str  # module path, e.g. "layer1.1"
    input: str  # node name of I
    output: str  # node name of O
    nodes: tuple[str, ...]  # node names inside, in graph order
    residual: bool  # identity-shaped with I added back


@dataclass(frozen=True)
class Stage:
    """Consecutive blocks under ``parent``; ``template`` is the identity-shaped block that
    growth copies (the last one)."""

    name: str
    parent: str
    blocks: tuple[Block, ...]

    @property
    def template(self) -> Block:
        """The last residual block: the one growth copies."""
        return [b for b in self.blocks if b.residual][-1]

    @property
    def count(self) -> int:
        """How many blocks the stage has."""
        return len(self.blocks)


def aliases(node: torch.fx.Node, inside: set) -> list[torch.fx.Node]:
    """``node`` and what inside the block merely re-labels it (dtype moves, copies)."""
    found, todo = [node], [node]
    while todo:
        n = todo.pop()
        for u in n.users:
            if (
                u in inside
                and u.op in ("call_function", "call_method")
                and has_trait(u.target, "alias")
                and u.args
                and u.args[0] is n
            ):
                found.append(u)
                todo.append(u)
    return found


def stream_users(node: torch.fx.Node, inside: set) -> list[torch.fx.Node]:
    """Users of ``node`` inside the block that compute from it (metadata checks left out)."""
    return [
        u
        for u in node.users
        if u in inside and not (u.op == "call_function" and has_trait(u.target, "metadata_check"))
    ]


def residual_add(node: torch.fx.Node, inside: set, path: str | None = None, nested: bool = False):
    """An add inside the block that adds (an alias of) ``node`` to a branch computed inside:
    (add, the operand on the stream, the branch operand) or None."""
    for a in aliases(node, inside):
        for u in a.users:
            if (
                u in inside
                and is_add(u)
                and a in u.args
                and (path is None or _paths(u)[-1] == path or nested and path in _paths(u))
            ):
                others = [b for b in u.args if isinstance(b, torch.fx.Node) and b is not a]
                if len(others) == 1 and others[0] in inside and others[0].op != "get_attr":
                    return u, a, others[0]
    return None


def is_add(n: torch.fx.Node) -> bool:
    """``n`` sums two operands (its rule has the trait "add")."""
    return n.op in ("call_function", "call_method") and has_trait(n.target, "add")


def _paths(node: torch.fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [v[0] if isinstance(v, tuple) else k for k, v in stack.items()]


def _shape(vals: dict, node: torch.fx.Node):
    v = vals.get(node)
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _members(gm: torch.fx.GraphModule) -> dict[str, list[torch.fx.Node]]:
    members: dict[str, list[torch.fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        for p in dict.fromkeys(_paths(node)):
            members.setdefault(p, []).append(node)
    return members


_CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
_CONTAINER_NAMES = frozenset(f"{c.__module__}.{c.__qualname__}" for c in _CONTAINERS)


def _is_container(nodes: list[torch.fx.Node], path: str) -> bool:
    """The module at ``path`` is one of torch's containers (exactly, not a subclass), as the
    nodes' ``nn_module_stack`` records it: the class (fx) or its qualified name (export)."""
    for n in nodes:
        for v in (n.meta.get("nn_module_stack") or {}).values():
            if isinstance(v, tuple) and v[0] == path:
                return v[1] in _CONTAINER_NAMES if isinstance(v[1], str) else v[1] in _CONTAINERS
    return False


def _depends_on(node: torch.fx.Node, source: torch.fx.Node, inside: set) -> bool:
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n is source:
            return True
        if n in seen or n not in inside:
            continue
        seen.add(n)
        todo.extend(n.all_input_nodes)
    return False


def _stream_output(vals: dict, inputs: list, outputs: list, inside: set, path: str, nested: bool):
    """The one output with a residual input's shape whose other outputs are side results
    independent of that input (T5's position bias), or None."""
    for i in inputs:
        if residual_add(i, inside, path, nested) is None:
            continue
        same = [o for o in outputs if _shape(vals, o) == _shape(vals, i)]
        if len(same) == 1 and not any(
            _depends_on(o, i, inside) for o in outputs if o is not same[0]
        ):
            return same[0]
    return None


def _classify(
    gm: torch.fx.GraphModule,
    vals: dict,
    path: str,
    nodes: list[torch.fx.Node],
    nested: bool = False,
) -> Block | str:
    """The block that ``path``'s nodes form, or why they form none."""
    inside = set(nodes)
    nested = nested and not _is_container(nodes, path)
    inputs = list(
        dict.fromkeys(
            a for n in nodes for a in n.all_input_nodes if a not in inside and a.op != "get_attr"
        )
    )
    outputs = [n for n in nodes if any(u not in inside for u in n.users)]
    if not inputs:
        return "its nodes read no tensor from outside it"
    if len(outputs) > 1:
        stream = _stream_output(vals, inputs, outputs, inside, path, nested)
        outputs = [stream] if stream is not None else outputs
    if len(outputs) != 1:
        return (
            f"its nodes hand {len(outputs)} results to the rest of the graph "
            f"({', '.join(o.name for o in outputs[:4])}); a block has one output (a module "
            f"called more than once, or one with several outputs, is not a block)"
        )
    o = outputs[0]
    streams = [
        i
        for i in inputs
        if _shape(vals, i) is not None
        and _shape(vals, i) == _shape(vals, o)
        and residual_add(i, inside, path, nested) is not None
    ]
    learned = any(
        n.op == "call_module"
        # a call_module node's target is its module's path (a str)
        and any(True for _ in gm.get_submodule(cast(str, n.target)).parameters())
        or any(a.op == "get_attr" for a in n.all_input_nodes)
        for n in nodes
    )
    if len(streams) == 1 and learned:  # residual: the stream is added back to a learned
        # branch; other inputs (masks, rotary tables) are shared
        return Block(path, streams[0].name, o.name, tuple(n.name for n in nodes), True)
    if len(inputs) == 1 and len(streams) != 1:
        return Block(path, inputs[0].name, o.name, tuple(n.name for n in nodes), False)
    if not streams:
        return (
            "no input of it is added back to its output by a residual add (not a "
            "residual block; a post-norm block normalises after the add)"
        )
    return f"it has {len(inputs)} inputs and no single residual stream"


def find_blocks(gm: torch.fx.GraphModule, vals: dict, nested: bool = False) -> list[Block]:
    """Every module path whose nodes form a single-input, single-output subgraph."""
    found = (_classify(gm, vals, p, nodes, nested) for p, nodes in _members(gm).items())
    return [b for b in found if isinstance(b, Block)]


def why_not_residual(
    gm: torch.fx.GraphModule, vals: dict, path: str, nested: bool = False
) -> str | None:
    """Why module ``path`` is no residual block; None if no node of the graph runs in it."""
    nodes = _members(gm).get(path)
    if nodes is None:
        return None
    b = _classify(gm, vals, path, nodes, nested)
    if isinstance(b, Block):
        return "it has no residual add of its input (a plain block)" if not b.residual else ""
    return b


def find_stages(gm: torch.fx.GraphModule, vals: dict, nested: bool = False) -> list[Stage]:
    """Runs of consecutive identity-shaped residual blocks under one parent module, each with
    the block that leads into it (e.g. a downsampling block), if it has the same parent."""
    blocks = find_blocks(gm, vals, nested)
    by_parent: dict[str, list[Block]] = {}
    for b in blocks:
        by_parent.setdefault(b.path.rpartition(".")[0], []).append(b)
    stages = []
    for parent, children in by_parent.items():
        runs: list[list[Block]] = []
        for k, b in enumerate(children):
            if not b.residual:
                continue
            if runs and runs[-1][-1].output == b.input:
                runs[-1].append(b)
                continue
            lead = (
                children[k - 1]
                if k and children[k - 1].output == b.input and not children[k - 1].residual
                else None
            )
            runs.append([lead, b] if lead else [b])
        for run in runs:
            if len(runs) == 1:
                name = parent
            else:
                first, last = run[0].path.rpartition(".")[2], run[-1].path.rpartition(".")[2]
                name = f"{parent}.{first}-{last}"
            stages.append(Stage(name, parent, tuple(run)))
    return stages


def next_names(existing: list[str], count: int) -> list[str]:
    """Names continuing a sibling pattern: 0,1 -> 2,3; block2-0 -> block2-1; else name_k."""
    pattern = re.compile(r"^(.*?)(\d+)$")
    matches = [m for e in existing if (m := pattern.match(e)) is not None]
    if existing and len(matches) == len(existing) and len({m.group(1) for m in matches}) == 1:
        prefix = matches[0].group(1)
        start = max(int(m.group(2)) for m in matches) + 1
        return [f"{prefix}{start + k}" for k in range(count)]
    base = existing[-1] if existing else "block"
    return [f"{base}_grown{k}" for k in range(count)]
