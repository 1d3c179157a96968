"""Zero-output copies of residual blocks: LLaMA-Pro block expansion and stage growth.

A copy of a residual block ``x -> post(x + f(x))`` in which every residual branch ``f`` is
silenced (the last layer on it zeroed, so ``f(x) = 0`` for every ``x``) computes ``post(x)``
along its stream.  The copy is exact -- it returns its input -- when every op on the stream
between the adds is one of

* an alias (dtype move, copy) or a reshape (``view``/``reshape``/``flatten``: row-major order is
  kept, and the stream ends in the shape it started with, so the composition is the identity),
* an activation that is idempotent on the values the previous block produced with it.

A normalisation on the stream after an add (post-norm: BERT) is refused.  Branches may be sums
of branches (GPT-NeoX's parallel residual ``x + attn(ln1(x)) + mlp(ln2(x))``: both are
silenced) and may end in ops that keep zero at zero (dropout, dtype casts, a product with a
finite factor -- RMSNorm ``x * rsqrt(mean(x^2) + eps) * (1 + w)`` as in Gemma's sandwich
norms maps 0 to 0, so zeroing the projection before it suffices).

Several copies are inserted in one call by walking the blocks from last to first: an insertion
after block k only rewires the readers of block k's output, which later blocks no longer
are once they have been handled.
"""

from __future__ import annotations

import copy
import operator
from numbers import Number

import torch
import torch.fx
import torch.nn as nn

from ..analysis.arguments import argument
from ..analysis.blocks import Block, Stage, aliases, is_add, next_names, residual_add, stream_users
from ..analysis.rules.registry import has_trait
from ..errors import InputError
from ..fxnode import node_arg, target_name
from ..growth import layers_inserted
from ..unique import unique_name
from .activation import activation_module, is_idempotent
from .deepen import DeepenError


def _calls(n: torch.fx.Node, trait: str) -> bool:
    """``n`` calls a function or method whose rule has ``trait``."""
    return n.op in ("call_function", "call_method") and has_trait(n.target, trait)


def _reads_input(node: torch.fx.Node) -> bool:
    """Whether ``node`` depends on a graph input (else it is made of parameters and
    constants only, like Gemma's ``1 + weight``)."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "placeholder":
            return True
        todo.extend(n.all_input_nodes)
    return False


def branch_zero_targets(gm: torch.fx.GraphModule, branch: torch.fx.Node, inside: set) -> list[str]:
    """Qualified names of the tensors to zero so that the residual branch ending in ``branch``
    outputs exactly zero for every input: the last linear/conv's (or norm module's) weight
    and bias, for a sum of branches those of every term."""
    n = branch
    while n in inside:
        if n.op == "call_module":
            m = gm.get_submodule(target_name(n))
            if isinstance(getattr(m, "weight", None), torch.Tensor):
                return [
                    f"{n.target}.{p}"
                    for p in ("weight", "bias")
                    if isinstance(getattr(m, p, None), torch.Tensor)
                ]
            if has_trait(m, "keeps_zero"):
                n = node_arg(n, 0)
                continue
        elif (
            n.op == "call_function"
            and n.target is operator.getitem
            and (source := node_arg(n, 0)).op == "call_module"
            and isinstance(gm.get_submodule(target_name(source)), nn.MultiheadAttention)
            and n.args[1] == 0
        ):
            out = f"{source.target}.out_proj"
            m = gm.get_submodule(out)
            return [
                f"{out}.{p}"
                for p in ("weight", "bias")
                if isinstance(getattr(m, p, None), torch.Tensor)
            ]
        elif _calls(n, "affine"):  # op(x, weight, bias): zero both
            refs = [argument(n, 1, "weight", None), argument(n, 2, "bias", None)]
            refs = [a for a in refs if isinstance(a, torch.fx.Node)]
            if refs and all(r.op == "get_attr" for r in refs):
                return [target_name(r) for r in refs]
        elif _calls(n, "bias_plus_product"):  # bias + x @ w: zero the bias and w
            operands = [n.args[0], n.args[2]]
            attrs = [r for r in operands if isinstance(r, torch.fx.Node) and r.op == "get_attr"]
            if len(attrs) == len(operands):
                return [target_name(r) for r in attrs]
        elif is_add(n):  # a sum of branches (parallel residual) or a bias: zero every term
            found: list[str] = []
            for a in n.args[:2]:
                if isinstance(a, torch.fx.Node) and a.op == "get_attr":
                    found.append(target_name(a))
                elif isinstance(a, torch.fx.Node):
                    found += branch_zero_targets(gm, a, inside)
                elif not (isinstance(a, Number) and a == 0):
                    break
            else:
                return found
        elif _calls(n, "keeps_zero"):
            n = node_arg(n, 0)
            continue
        elif _calls(n, "mul"):
            # zero * finite = 0: silence a factor that carries data; parameter-only factors
            # (a norm's scale, Gemma's 1 + w) are kept as they are
            data = [
                a
                for a in n.args
                if isinstance(a, torch.fx.Node) and a.op != "get_attr" and _reads_input(a)
            ]
            for a in data:
                try:
                    return branch_zero_targets(gm, a, inside)
                except DeepenError:
                    continue
        break
    raise DeepenError(
        f"cannot find a layer to zero on the residual branch ending in "
        f"{branch.name!r} (stopped at {n.name!r}); this block cannot be copied "
        f"exactly"
    )


def _stream_users(node: torch.fx.Node, inside: set) -> list[torch.fx.Node]:
    return [u for u in stream_users(node, inside) if not _calls(u, "size_read")]


def residual_stream(gm: torch.fx.GraphModule, block: Block) -> list[str]:
    """Walk the residual stream of ``block`` from its input to its output: every add on it
    gets its branch zeroed; any other op on the stream must be an alias, a reshape or an
    idempotent activation (a post-norm block is refused).  Returns the tensors to zero."""
    nodes = {n.name: n for n in gm.graph.nodes}
    inside = {nodes[name] for name in block.nodes}
    current, out = nodes[block.input], nodes[block.output]
    zero: list[str] = []
    while current is not out:
        found = residual_add(current, inside)
        if found is not None:
            add, _, branch = found
            zero += branch_zero_targets(gm, branch, inside)
            current = add
            continue
        users = _stream_users(current, inside)
        if len(users) != 1:
            raise DeepenError(
                f"block {block.path!r}: the residual stream forks at "
                f"{current.name!r}; fxgrow cannot copy it exactly"
            )
        op = users[0]
        if op in aliases(current, inside) or (
            _calls(op, "reshape") and op.args and op.args[0] is current
        ):
            current = op
            continue
        act = activation_module(gm, op)
        if act is None or not is_idempotent(act):
            raise DeepenError(
                f"block {block.path!r} applies {op.name!r} to the residual stream after an add "
                f"(a post-norm or post-activation block); a zeroed copy would apply it twice, "
                f"which is exact only for idempotent activations"
            )
        current = op
    if not zero:
        raise DeepenError(f"block {block.path!r} has no residual add on its stream")
    return list(dict.fromkeys(zero))


def _rename(path: str, old: str, new: str) -> str:
    return new + path[len(old) :] if path == old or path.startswith(old + ".") else path


def _zero(gm: torch.fx.GraphModule, target: str) -> None:
    t: torch.Tensor
    try:
        t = gm.get_parameter(target)
    except AttributeError:
        t = gm.get_buffer(target)
    with torch.no_grad():
        t.zero_()


def insert_copies(
    gm: torch.fx.GraphModule, block: Block, after: Block, names: list[str], parent: str
) -> list[str]:
    """Insert copies of ``block`` (branches zeroed: each copy is the identity) after the
    output of ``after``, named ``parent.name``; returns their module paths.  Only what leads
    to the block's stream output is copied (side outputs such as T5's position bias stay the
    original's)."""
    layers_inserted(gm)
    zero = residual_stream(gm, block)
    nodes = {n.name: n for n in gm.graph.nodes}
    inside = {nodes[name] for name in block.nodes}
    block_in, block_out = nodes[block.input], nodes[block.output]
    needed, todo = set(), [block_out]
    while todo:
        n = todo.pop()
        if n in inside and n not in needed:
            needed.add(n)
            todo.extend(n.all_input_nodes)
    order = [n for n in gm.graph.nodes if n in needed]
    end = nodes[after.output]
    users = list(end.users)
    current = anchor = end
    template = gm.get_submodule(block.path)
    prefix = f"{parent}." if parent else ""
    new_paths = []
    for name in names:
        new_path = prefix + name
        gm.add_submodule(new_path, copy.deepcopy(template))
        for target in zero:
            _zero(gm, _rename(target, block.path, new_path))
        env = {block_in: current}
        owned = dict.fromkeys(
            a
            for n in order
            for a in n.all_input_nodes
            if a.op == "get_attr"
            and a not in inside
            and _rename(a.target, block.path, new_path) != a.target
        )
        for a in owned:  # parameters read by get_attr nodes outside the block's own nodes
            with gm.graph.inserting_after(anchor):
                env[a] = anchor = gm.graph.get_attr(_rename(a.target, block.path, new_path))
        for n in order:
            with gm.graph.inserting_after(anchor):
                new = gm.graph.node_copy(n, lambda a: env.get(a, a))  # noqa: B023  (called at once)
            if new.op in ("call_module", "get_attr"):
                new.target = _rename(target_name(new), block.path, new_path)
            stack = n.meta.get("nn_module_stack")
            if stack:
                new.meta["nn_module_stack"] = {
                    _rename(k, block.path, new_path): (_rename(v[0], block.path, new_path), v[1])
                    for k, v in stack.items()
                }
            env[n] = new
            anchor = new
        current = env[block_out]
        new_paths.append(new_path)
    for u in users:
        u.replace_input_with(end, current)
    return new_paths


def grow_stage(gm: torch.fx.GraphModule, stage: Stage, count: int) -> list[str]:
    """Append ``count - stage.count`` copies of the stage's last residual block; returns their
    module paths."""
    if count < stage.count:
        raise InputError(
            f"stage {stage.name!r} has {stage.count} blocks; fxgrow only grows (asked for {count})"
        )
    extra = count - stage.count
    if extra == 0:
        return []
    parent = gm.get_submodule(stage.parent) if stage.parent else gm
    names = next_names([name for name, _ in parent.named_children()], extra)
    return insert_copies(gm, stage.template, stage.blocks[-1], names, stage.parent)


def insert_block_after(gm: torch.fx.GraphModule, block: Block) -> str:
    """A zeroed copy of residual ``block`` right after it; returns its module path."""
    return insert_blocks_after(gm, [block])[0]


def insert_blocks_after(gm: torch.fx.GraphModule, blocks: list[Block]) -> list[str]:
    """A zeroed copy of each residual block right after it, all in one graph (LLaMA-Pro's
    interleaved expansion); a block named twice gets two copies.  Every block is checked
    before anything is inserted.  Returns the copies' module paths, in the order given."""
    for b in dict.fromkeys(blocks):
        residual_stream(gm, b)
    position = {n.name: k for k, n in enumerate(gm.graph.nodes)}
    order = sorted(range(len(blocks)), key=lambda k: position[blocks[k].output], reverse=True)
    paths: list[str] = [""] * len(blocks)
    for k in order:
        block = blocks[k]
        parent, _, leaf = block.path.rpartition(".")
        existing = {
            name for name, _ in (gm.get_submodule(parent) if parent else gm).named_children()
        }
        fresh = unique_name(f"{leaf}_deepen", existing)
        paths[k] = insert_copies(gm, block, block, [fresh], parent)[0]
    return paths
