"""Net2DeeperNet and residual-block growth as graph insertions.

* identity: after tensor h insert L with L(h) = h -- a Linear with the identity matrix for
  ``[..., C]``, a k x k conv whose kernel is the identity at its centre (padding k // 2 keeps the
  shape) for ``[N, C, ...]`` -- optionally a BatchNorm that is the identity in eval mode
  (running mean m, variance v, weight sqrt(v + eps), bias m), and, when h is the output of an
  activation sigma, a copy of sigma: exact iff sigma is idempotent on its range.
* residual: after h insert h + f(h), f = layer -> activation -> layer with the last layer
  zero: f(h) = 0 for any activation.
* block copies (``kind="block"``, stage growth): see ``block_copy``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

from ..errors import DeepenError, InputError
from ..fxnode import target_name
from ..growth import layers_inserted
from ..modes import preserved, set_training
from ..unique import unique_name
from .activation import _as_module, activation_module, is_idempotent


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
    return unique_name(base, {n for n, _ in gm.named_modules()})


def _channel_layer(
    kind: str, c: int, ndim: int, kernel_size: int, like: torch.Tensor
) -> nn.Linear | _ConvNd:
    layer: nn.Linear | _ConvNd
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
            assert layer.bias is not None  # built with a bias
            layer.bias.zero_()
    return layer.to(dtype=like.dtype, device=like.device)


def _layer_kind(
    node: torch.fx.Node, value: torch.Tensor, layouts_channel_axis: int | None, layer: str | None
) -> str:
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
    raise InputError(
        f"cannot tell whether the {value.dim()}-d tensor of shape "
        f"{tuple(value.shape)} after node {node.name!r} is channels-first or "
        f"channels-last; pass layer='conv' or layer='linear'"
    )


def insert_after(
    gm: torch.fx.GraphModule,
    node: torch.fx.Node,
    modules: list[tuple[str, nn.Module]],
    residual: bool = False,
) -> torch.fx.Node:
    """Insert ``modules`` (name, module) as a chain after ``node``; with ``residual``, the chain
    is added back to ``node``.  Every former user of ``node`` reads the new result."""
    layers_inserted(gm)
    users = list(node.users)
    anchor = node
    inserted = []
    training = (
        node.op == "call_module"
        and gm.get_submodule(target_name(node)).training
        or any(m.training for m in gm.modules())
    )
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


def deepen_node(
    gm: torch.fx.GraphModule,
    node: torch.fx.Node,
    value: object,
    channel_axis: int | None,
    *,
    kind: str,
    kernel_size: int,
    batchnorm: bool,
    layer: str | None,
    seed: int,
) -> list[str]:
    """Insert an identity layer or a zero residual block after ``node`` (``value``: what it
    computes on the example inputs, checked to be a floating-point tensor); returns new module
    names."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise InputError(f"node {node.name!r} does not produce a floating-point tensor")
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, int)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise InputError(
            f"kernel_size must be an odd positive integer (padding k // 2 keeps "
            f"the shape only for odd k), got {kernel_size!r}"
        )
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
                f"residual block, exact for any activation) or insert before the activation."
            )
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
            w.copy_(
                torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
                * (1.0 / max(1, w[0].numel())) ** 0.5
            )
        last = _channel_layer(lk, c, value.dim(), kernel_size, value)
        with torch.no_grad():
            last.weight.zero_()
            assert last.bias is not None  # _channel_layer builds its layers with a bias
            last.bias.zero_()
        modules = [
            (f"{prefix}.layer1", first),
            (f"{prefix}.act", _as_module(act) if act is not None else nn.ReLU()),
            (f"{prefix}.layer2", last),
        ]
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
    assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats
    with torch.no_grad():
        mean = value.mean(dims)
        var = value.var(dims, unbiased=False) if value.numel() > c else torch.ones(c)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean)
    return bn
