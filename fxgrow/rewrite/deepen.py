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

from ..analysis.blocks import Stage, next_names
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


def _layer_kind(value: torch.Tensor, layouts_channel_axis: int | None, layer: str | None) -> str:
    if layer in ("linear", "conv"):
        return layer
    if layer is not None:
        raise InputError(f"layer must be 'linear', 'conv' or None, got {layer!r}")
    if value.dim() == 2:
        return "linear"
    if value.dim() in (4, 5):
        return "conv"
    if value.dim() == 3 and layouts_channel_axis is not None:
        return "conv" if layouts_channel_axis == 1 else "linear"
    raise InputError(f"cannot tell whether a {value.dim()}-d tensor of shape "
                     f"{tuple(value.shape)} is channels-first or channels-last; pass "
                     f"layer='conv' or layer='linear'")


def insert_after(gm: torch.fx.GraphModule, node: torch.fx.Node, modules: list[tuple[str, nn.Module]],
                 residual: bool = False) -> torch.fx.Node:
    """Insert ``modules`` (name, module) as a chain after ``node``; with ``residual``, the chain
    is added back to ``node``.  Every former user of ``node`` reads the new result."""
    users = list(node.users)
    anchor = node
    inserted = []
    for name, module in modules:
        gm.add_submodule(name, module)
        with gm.graph.inserting_after(anchor):
            anchor = gm.graph.call_module(name, (anchor,))
        inserted.append(anchor)
    if residual:
        with gm.graph.inserting_after(anchor):
            anchor = gm.graph.call_function(operator.add, (node, anchor))
        inserted.append(anchor)
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
    lk = _layer_kind(value, channel_axis, layer)
    c = value.shape[-1] if lk == "linear" else value.shape[1]
    act = activation_module(gm, node)
    base = node.target if node.op == "call_module" else node.name
    prefix = _unique(gm, f"{base}_deepen")
    modules: list[tuple[str, nn.Module]] = []
    if kind == "identity":
        if act is not None and not is_idempotent(act, value, value.dtype):
            raise DeepenError(
                f"inserting an identity layer after {node.name!r} would repeat its activation "
                f"{type(act).__name__}, which is not idempotent (sigma(sigma(x)) != sigma(x)), "
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
    return bn.eval()


# -- stage growth ------------------------------------------------------------------------------
_PASS_THROUGH_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)


def _last_scale(gm: torch.fx.GraphModule, add: torch.fx.Node, block_input: torch.fx.Node,
                inside: set) -> str:
    """The module whose output scales the residual branch at ``add`` (to be zeroed)."""
    branch = [a for a in add.args if isinstance(a, torch.fx.Node) and a is not block_input]
    if len(branch) != 1:
        raise DeepenError(f"cannot tell the residual branch of {add.name!r}")
    n = branch[0]
    while n in inside:
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            if getattr(m, "weight", None) is not None and isinstance(m.weight, torch.Tensor):
                return n.target
            if isinstance(m, _PASS_THROUGH_MODULES):
                n = n.args[0]
                continue
        elif n.op == "call_function" and getattr(n.target, "__name__", "") in (
                "stochastic_depth", "dropout"):
            n = n.args[0]
            continue
        elif n.op in ("call_function", "call_method") and \
                getattr(n.target, "__name__", n.target) in ("mul", "mul_"):
            n = next(a for a in n.args if isinstance(a, torch.fx.Node) and a.op != "get_attr")
            continue
        break
    raise DeepenError(f"cannot find a layer to zero on the residual branch of {add.name!r} "
                      f"(stopped at {n.name!r}); this block cannot be copied exactly")


def _zero(module: nn.Module) -> None:
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(module, name, None)
            if isinstance(p, torch.Tensor):
                p.zero_()


def _rename(path: str, old: str, new: str) -> str:
    return new + path[len(old):] if path == old or path.startswith(old + ".") else path


def grow_stage(gm: torch.fx.GraphModule, stage: Stage, count: int) -> list[str]:
    """Append ``count - stage.count`` copies of the stage's template block; returns their
    module paths."""
    if count < stage.count:
        raise InputError(f"stage {stage.name!r} has {stage.count} blocks; fxgrow only grows "
                         f"(asked for {count})")
    extra = count - stage.count
    if extra == 0:
        return []
    nodes = {n.name: n for n in gm.graph.nodes}
    tpl = stage.template
    inside = {nodes[name] for name in tpl.nodes}
    block_in, block_out = nodes[tpl.input], nodes[tpl.output]
    adds = [n for n in inside if n.op in ("call_function", "call_method") and block_in in n.args
            and (n.target in (operator.add, operator.iadd, torch.add)
                 or n.target in ("add", "add_"))]
    scale = _last_scale(gm, adds[0], block_in, inside)
    post = _post_add_ops(adds[0], block_out, inside)
    for n in post:
        act = activation_module(gm, n)
        if act is None or not is_idempotent(act):
            raise DeepenError(f"block {tpl.path!r} applies {n.name!r} after its residual add; a "
                              f"copy computes it twice, which is exact only for idempotent "
                              f"activations")
    parent = gm.get_submodule(stage.parent) if stage.parent else gm
    siblings = [name for name, _ in parent.named_children()]
    names = next_names(siblings, extra)
    prefix = f"{stage.parent}." if stage.parent else ""
    users = [u for u in block_out.users]
    current = block_out
    anchor = block_out
    new_paths = []
    template_module = gm.get_submodule(tpl.path)
    order = [n for n in gm.graph.nodes if n in inside]
    for name in names:
        new_path = prefix + name
        module = copy.deepcopy(template_module)
        gm.add_submodule(new_path, module)
        _zero(gm.get_submodule(_rename(scale, tpl.path, new_path)))
        env = {block_in: current}
        for n in order:
            with gm.graph.inserting_after(anchor):
                new = gm.graph.node_copy(n, lambda a: env.get(a, a))
            if new.op in ("call_module", "get_attr"):
                new.target = _rename(new.target, tpl.path, new_path)
            stack = n.meta.get("nn_module_stack")
            if stack:
                new.meta["nn_module_stack"] = {
                    _rename(k, tpl.path, new_path): (_rename(v[0], tpl.path, new_path), v[1])
                    for k, v in stack.items()}
            env[n] = new
            anchor = new
        current = env[block_out]
        new_paths.append(new_path)
    for u in users:
        u.replace_input_with(block_out, current)
    return new_paths


def _post_add_ops(add: torch.fx.Node, out: torch.fx.Node, inside: set) -> list[torch.fx.Node]:
    chain, n = [], out
    while n is not add:
        chain.append(n)
        preds = [a for a in n.all_input_nodes if a in inside]
        if len(preds) != 1:
            raise DeepenError(f"unexpected structure after the residual add {add.name!r}")
        n = preds[0]
    return list(reversed(chain))
