"""Net2DeeperNet and residual-block growth as graph insertions.

* identity: after tensor h insert L with L(h) = h -- a Linear with the identity matrix for
  ``[..., C]``, a k x k conv whose kernel is the identity at its centre (padding k // 2 keeps the
  shape) for ``[N, C, ...]`` -- optionally a BatchNorm that is the identity in eval mode
  (running mean m, variance v, weight sqrt(v + eps), bias m), and, when h is the output of an
  activation sigma, a copy of sigma: exact iff sigma is idempotent on its range.
* residual: after h insert h + f(h), f = layer -> activation -> layer with the last layer
  zero: f(h) = 0 for any activation.
* stage growth: copies of a stage's last residual block with the last scale on the residual
  branch zeroed (BatchNorm weight and bias, or the last conv/linear): the copy computes
  act(x + 0), exact when the block's post-add ops are idempotent on x, which the previous
  block produced with the same ops.
"""
from __future__ import annotations

import copy
import operator
from typing import Any, Iterable

import torch
import torch.fx
import torch.nn as nn

from ..analysis.blocks import Block, Stage, aliases, next_names, residual_add, stream_users
from ..errors import InputError, UnsupportedModelError
from ..modes import preserved, set_training
from .activation import _as_module, activation_module, is_idempotent


class DeepenError(UnsupportedModelError):
    """An insertion that would not preserve the function (e.g. a non-idempotent activation)."""


def node_values(gm: torch.fx.GraphModule, inputs: tuple, names: Iterable[str]) -> dict:
    """Real values of the named nodes on ``inputs`` (eval mode, no grad, nothing mutated)."""
    wanted = set(names)
    found: dict[str, Any] = {}

    class _Catch(torch.fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            if n.name in wanted:
                found[n.name] = r.detach().clone() if isinstance(r, torch.Tensor) else r
            return r
    with preserved(gm), torch.no_grad():
        set_training(gm, False)
        _Catch(gm).run(*inputs)
    return found


def _unique(gm: torch.fx.GraphModule, base: str) -> str:
    names = {n for n, _ in gm.named_modules()}
    k = 0
    while f"{base}{k}" in names:
        k += 1
    return f"{base}{k}"


def _channel_layer(kind: str, c: int, ndim: int, kernel_size: int, like: torch.Tensor) -> nn.Module:
    if kind == "linear":
        layer = nn.Linear(c, c)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(c))
            layer.bias.zero_()
    else:
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim - 2]
        layer = conv(c, c, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            layer.weight.zero_()
            centre = (slice(None), slice(None)) + (kernel_size // 2,) * (ndim - 2)
            layer.weight[centre] = torch.eye(c)
            layer.bias.zero_()
    return layer.to(dtype=like.dtype, device=like.device)


def _layer_kind(node: torch.fx.Node, value: torch.Tensor, layouts_channel_axis: int | None,
                layer: str | None) -> str:
    if layer in ("linear", "conv"):
        return layer
    if layer is not None:
        raise InputError(f"layer must be 'linear', 'conv' or None, got {layer!r}")
    if value.dim() == 2:
        return "linear"
    if value.dim() in (3, 4, 5) and layouts_channel_axis is not None:
        return "conv" if layouts_channel_axis == 1 else "linear"
    if value.dim() in (4, 5):
        return "conv"
    raise InputError(f"cannot tell whether the {value.dim()}-d tensor of shape "
                     f"{tuple(value.shape)} after node {node.name!r} is channels-first or "
                     f"channels-last; pass layer='conv' or layer='linear'")


def insert_after(gm: torch.fx.GraphModule, node: torch.fx.Node, modules: list[tuple[str, nn.Module]],
                 residual: bool = False) -> torch.fx.Node:
    """Insert ``modules`` (name, module) as a chain after ``node``; with ``residual``, the chain
    is added back to ``node``.  Every former user of ``node`` reads the new result."""
    users = list(node.users)
    anchor = node
    inserted = []
    training = node.op == "call_module" and gm.get_submodule(node.target).training or \
        any(m.training for m in gm.modules())
    stack = node.meta.get("nn_module_stack")
    for name, module in modules:
        module.train(training)
        gm.add_submodule(name, module)
        with gm.graph.inserting_after(anchor):
            anchor = gm.graph.call_module(name, (anchor,))
        inserted.append(anchor)
    if residual:
        with gm.graph.inserting_after(anchor):
            anchor = gm.graph.call_function(operator.add, (node, anchor))
        inserted.append(anchor)
    for n in inserted:  # inserted nodes belong to the module the anchor was in
        if stack is not None:
            n.meta["nn_module_stack"] = dict(stack)
    for u in users:
        u.replace_input_with(node, anchor)
    return anchor


def deepen_node(gm: torch.fx.GraphModule, node: torch.fx.Node, value: torch.Tensor,
                channel_axis: int | None, *, kind: str, kernel_size: int, batchnorm: bool,
                layer: str | None, seed: int) -> list[str]:
    """Insert an identity layer or a zero residual block after ``node``; returns new module
    names."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise InputError(f"node {node.name!r} does not produce a floating-point tensor")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise InputError(f"kernel_size must be an odd positive integer (padding k // 2 keeps "
                         f"the shape only for odd k), got {kernel_size!r}")
    lk = _layer_kind(node, value, channel_axis, layer)
    c = value.shape[-1] if lk == "linear" else value.shape[1]
    act = activation_module(gm, node)
    base = node.target if node.op == "call_module" else node.name
    prefix = _unique(gm, f"{base}_deepen")
    modules: list[tuple[str, nn.Module]] = []
    if kind == "identity":
        if act is not None and not is_idempotent(act, value, value.dtype):
            raise DeepenError(
                f"inserting an identity layer after {node.name!r} would repeat its activation "
                f"{_act_name(act)}, which is not idempotent (sigma(sigma(x)) != sigma(x)), "
                f"so the function would change. Use kind='residual' (a zero-initialised "
                f"residual block, exact for any activation) or insert before the activation.")
        modules.append((f"{prefix}.layer", _channel_layer(lk, c, value.dim(), kernel_size, value)))
        if batchnorm:
            if lk != "conv":
                raise InputError("batchnorm=True needs a channels-first tensor ([N, C, ...])")
            modules.append((f"{prefix}.bn", _identity_batchnorm(value)))
        if act is not None:
            modules.append((f"{prefix}.act", _as_module(act)))
        insert_after(gm, node, modules)
    elif kind == "residual":
        gen = torch.Generator().manual_seed(seed)
        first = _channel_layer(lk, c, value.dim(), kernel_size, value)
        with torch.no_grad():
            w = first.weight
            w.copy_(torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
                    * (1.0 / max(1, w[0].numel())) ** 0.5)
        last = _channel_layer(lk, c, value.dim(), kernel_size, value)
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
        modules = [(f"{prefix}.layer1", first), (f"{prefix}.act", _as_module(act) if act
                                                   is not None else nn.ReLU()),
                   (f"{prefix}.layer2", last)]
        insert_after(gm, node, modules, residual=True)
    else:
        raise InputError(f"kind must be 'identity' or 'residual', got {kind!r}")
    return [name for name, _ in modules]


def _act_name(act: nn.Module) -> str:
    fn = getattr(act, "fn", None)
    return getattr(fn, "__name__", fn) if fn is not None else type(act).__name__


def _identity_batchnorm(value: torch.Tensor) -> nn.Module:
    c = value.shape[1]
    bn = {3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[value.dim()](c)
    bn = bn.to(dtype=value.dtype, device=value.device)
    dims = [d for d in range(value.dim()) if d != 1]
    with torch.no_grad():
        mean = value.mean(dims)
        var = value.var(dims, unbiased=False) if value.numel() > c else torch.ones(c)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean)
    return bn


# -- block copies ------------------------------------------------------------------------------
_PASS_THROUGH_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_ADD_TARGETS = (operator.add, operator.iadd, torch.add, torch.ops.aten.add.Tensor)
_LINEAR_FUNCTIONS = (torch.nn.functional.linear, torch.ops.aten.linear.default,
                     torch.nn.functional.conv1d, torch.nn.functional.conv2d,
                     torch.nn.functional.conv3d, torch.ops.aten.conv2d.default,
                     torch.ops.aten.conv1d.default)
_ZERO_PRESERVING = ("stochastic_depth", "dropout", "view", "reshape", "_unsafe_view", "permute",
                    "transpose", "contiguous", "clone", "flatten", "to", "_to_copy", "alias")


def _is_add(n: torch.fx.Node) -> bool:
    return (n.op == "call_function" and n.target in _ADD_TARGETS
            or n.op == "call_method" and n.target in ("add", "add_"))


def _name(target) -> str:
    name = getattr(target, "__name__", target)
    return name.split(".")[0] if isinstance(name, str) else ""


def _last_scale(gm: torch.fx.GraphModule, branch: torch.fx.Node, inside: set) -> list[str]:
    """Qualified names of the tensors to zero so that the residual branch ending in ``branch``
    outputs exactly zero: the last norm's or linear/conv's weight and bias."""
    n = branch
    while n in inside:
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            if isinstance(getattr(m, "weight", None), torch.Tensor):
                return [f"{n.target}.{p}" for p in ("weight", "bias")
                        if isinstance(getattr(m, p, None), torch.Tensor)]
            if isinstance(m, _PASS_THROUGH_MODULES):
                n = n.args[0]
                continue
        elif n.op == "call_function" and n.target is operator.getitem and \
                n.args[0].op == "call_module" and isinstance(
                    gm.get_submodule(n.args[0].target), nn.MultiheadAttention) and n.args[1] == 0:
            out = f"{n.args[0].target}.out_proj"
            m = gm.get_submodule(out)
            return [f"{out}.{p}" for p in ("weight", "bias")
                    if isinstance(getattr(m, p, None), torch.Tensor)]
        elif n.op == "call_function" and n.target in _LINEAR_FUNCTIONS:
            refs = [a for a in n.args[1:3] if isinstance(a, torch.fx.Node)]
            if refs and all(r.op == "get_attr" for r in refs):
                return [r.target for r in refs]
        elif n.op == "call_function" and n.target in (torch.addmm, torch.ops.aten.addmm.default):
            refs = [n.args[0], n.args[2]]
            if all(isinstance(r, torch.fx.Node) and r.op == "get_attr" for r in refs):
                return [r.target for r in refs]
        elif n.op in ("call_function", "call_method") and _name(n.target) in _ZERO_PRESERVING:
            n = n.args[0]
            continue
        elif n.op in ("call_function", "call_method") and _name(n.target) in ("mul", "mul_"):
            n = next(a for a in n.args if isinstance(a, torch.fx.Node) and a.op != "get_attr")
            continue
        break
    raise DeepenError(f"cannot find a layer to zero on the residual branch ending in "
                      f"{branch.name!r} (stopped at {n.name!r}); this block cannot be copied "
                      f"exactly")


def residual_stream(gm: torch.fx.GraphModule, block: Block) -> list[str]:
    """Walk the residual stream of ``block`` from its input to its output: every add on it
    gets its branch zeroed; any other op on the stream must be an idempotent activation (a
    post-norm block is refused).  Returns the tensors to zero."""
    nodes = {n.name: n for n in gm.graph.nodes}
    inside = {nodes[name] for name in block.nodes}
    current, out = nodes[block.input], nodes[block.output]
    zero: list[str] = []
    while current is not out:
        found = residual_add(current, inside)
        if found is not None:
            add, _, branch = found
            zero += _last_scale(gm, branch, inside)
            current = add
            continue
        users = stream_users(current, inside)
        if len(users) != 1:
            raise DeepenError(f"block {block.path!r}: the residual stream forks at "
                              f"{current.name!r}; fxgrow cannot copy it exactly")
        op = users[0]
        if op in aliases(current, inside):
            current = op
            continue
        act = activation_module(gm, op)
        if act is None or not is_idempotent(act):
            raise DeepenError(
                f"block {block.path!r} applies {op.name!r} to the residual stream after an add "
                f"(a post-norm or post-activation block); a zeroed copy would apply it twice, "
                f"which is exact only for idempotent activations")
        current = op
    if not zero:
        raise DeepenError(f"block {block.path!r} has no residual add on its stream")
    return zero


def _rename(path: str, old: str, new: str) -> str:
    return new + path[len(old):] if path == old or path.startswith(old + ".") else path


def insert_copies(gm: torch.fx.GraphModule, block: Block, after: Block, names: list[str],
                  parent: str) -> list[str]:
    """Insert copies of ``block`` (branches zeroed: each copy is the identity) after the
    output of ``after``, named ``parent.name``; returns their module paths."""
    zero = residual_stream(gm, block)
    nodes = {n.name: n for n in gm.graph.nodes}
    inside = {nodes[name] for name in block.nodes}
    block_in = nodes[block.input]
    block_out = nodes[block.output]
    end = nodes[after.output]
    users = list(end.users)
    current = anchor = end
    template = gm.get_submodule(block.path)
    order = [n for n in gm.graph.nodes if n in inside]
    prefix = f"{parent}." if parent else ""
    new_paths = []
    for name in names:
        new_path = prefix + name
        gm.add_submodule(new_path, copy.deepcopy(template))
        with torch.no_grad():
            for target in zero:
                gm.get_parameter(_rename(target, block.path, new_path)).zero_() \
                    if _is_param(gm, _rename(target, block.path, new_path)) else \
                    gm.get_buffer(_rename(target, block.path, new_path)).zero_()
        env = {block_in: current}
        owned = dict.fromkeys(a for n in order for a in n.all_input_nodes
                              if a.op == "get_attr" and a not in inside
                              and _rename(a.target, block.path, new_path) != a.target)
        for a in owned:  # parameters read by get_attr nodes outside the block's own nodes
            with gm.graph.inserting_after(anchor):
                env[a] = anchor = gm.graph.get_attr(_rename(a.target, block.path, new_path))
        for n in order:
            with gm.graph.inserting_after(anchor):
                new = gm.graph.node_copy(n, lambda a: env.get(a, a))
            if new.op in ("call_module", "get_attr"):
                new.target = _rename(new.target, block.path, new_path)
            stack = n.meta.get("nn_module_stack")
            if stack:
                new.meta["nn_module_stack"] = {
                    _rename(k, block.path, new_path): (_rename(v[0], block.path, new_path), v[1])
                    for k, v in stack.items()}
            env[n] = new
            anchor = new
        current = env[block_out]
        new_paths.append(new_path)
    for u in users:
        u.replace_input_with(end, current)
    return new_paths


def _is_param(gm: torch.fx.GraphModule, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


def grow_stage(gm: torch.fx.GraphModule, stage: Stage, count: int) -> list[str]:
    """Append ``count - stage.count`` copies of the stage's last residual block; returns their
    module paths."""
    if count < stage.count:
        raise InputError(f"stage {stage.name!r} has {stage.count} blocks; fxgrow only grows "
                         f"(asked for {count})")
    extra = count - stage.count
    if extra == 0:
        return []
    parent = gm.get_submodule(stage.parent) if stage.parent else gm
    names = next_names([name for name, _ in parent.named_children()], extra)
    return insert_copies(gm, stage.template, stage.blocks[-1], names, stage.parent)


def insert_block_after(gm: torch.fx.GraphModule, block: Block) -> str:
    """A zeroed copy of residual ``block`` right after it; returns its module path."""
    parent, _, leaf = block.path.rpartition(".")
    existing = {name for name, _ in (gm.get_submodule(parent) if parent else gm).named_children()}
    k = 0
    while f"{leaf}_deepen{k}" in existing:
        k += 1
    return insert_copies(gm, block, block, [f"{leaf}_deepen{k}"], parent)[0]
