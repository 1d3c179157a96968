"""Activations in the graph, and the rule that decides when repeating one is exact.

Net2DeeperNet inserts h' = sigma(I h) after h = sigma(...).  That is exact iff sigma(sigma(x)) =
sigma(x) for every x that reaches it, i.e. sigma is idempotent on its own range.  fxgrow does not
keep a list of "safe" names: it evaluates the very module or function on a dense probe of inputs
(and on the values seen at that node) and checks sigma(sigma(x)) == sigma(x) bit for bit.
ReLU, ReLU6, Hardtanh pass; GELU, SiLU, LeakyReLU, Sigmoid fail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn

from ..analysis.rules.registry import has_trait, module_for
from ..fxnode import target_name


def activation_module(gm: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    """A fresh module computing the activation ``node`` applies, or None if it is not one
    (its rule has the trait "activation")."""
    if node.op == "call_module":
        m = gm.get_submodule(target_name(node))
        return copy.deepcopy(m) if has_trait(m, "activation") else None
    if node.op in ("call_function", "call_method") and has_trait(node.target, "activation"):
        return _FunctionActivation(
            node.target, node.args[1:], dict(node.kwargs), node.op == "call_method"
        )
    return None


class _FunctionActivation(nn.Module):
    """A functional activation as a module (so it can be inserted as a graph leaf)."""

    def __init__(self, fn, args, kwargs, method: bool) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs, self.method = fn, tuple(args), kwargs, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method:
            return getattr(x, self.fn)(*self.args, **self.kwargs)
        kwargs = {k: v for k, v in self.kwargs.items() if k != "inplace"}
        return self.fn(x, *self.args, **kwargs)


def _as_module(act: nn.Module) -> nn.Module:
    """Real torch.nn module for a functional activation, so later analysis knows it: the
    class its rule names (``as_module``), given the call's keyword arguments."""
    if isinstance(act, _FunctionActivation) and not act.args:
        cls = module_for(act.fn)
        if cls is not None:
            try:
                return cls(**{k: v for k, v in act.kwargs.items() if k != "inplace"})
            except TypeError:  # a keyword the module does not take: keep the function
                pass
    return act


def is_idempotent(
    act: Callable[[torch.Tensor], torch.Tensor],
    seen: torch.Tensor | None = None,
    dtype=torch.float32,
) -> bool:
    """sigma(sigma(x)) == sigma(x) on a dense probe and on the values seen at the node."""
    probe = torch.cat(
        [
            torch.linspace(-60, 60, 24001, dtype=dtype),
            torch.tensor([0.0, -0.0, 1e-6, -1e-6, 1e4, -1e4], dtype=dtype),
        ]
    )
    with torch.no_grad():
        xs = [probe] + ([seen.detach().reshape(-1).to(dtype)] if seen is not None else [])
        for x in xs:
            if isinstance(act, nn.PReLU):
                if act.num_parameters != 1:
                    return False
                x = x.reshape(1, -1)
            y = act(x)
            if not torch.equal(act(y), y):
                return False
    return True
