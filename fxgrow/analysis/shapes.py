"""Shape propagation: run the graph once on meta tensors (no arithmetic, no memory) and keep
every node's example value.  Falls back to the real example inputs when an op has no meta
kernel or needs data (``.item()``, data-dependent shapes)."""
from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..modes import preserved, set_training

_META = torch.device("meta")
_NO_OPS = {getattr(torch.ops.aten, n).default for n in ("_assert_tensor_metadata",)
           if hasattr(torch.ops.aten, n)}


def _meta(x: Any) -> Any:
    def conv(v):
        if isinstance(v, torch.Tensor) and v.device != _META:
            return v.to(_META)
        if isinstance(v, torch.device):
            return _META
        return v
    return pytree.tree_map(conv, x)


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, meta: bool) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.meta = meta
        self.vals: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        if self.meta and n.op == "call_function" and n.target in _NO_OPS:
            result = None
        else:
            result = super().run_node(n)
        self.vals[n] = result
        return result

    def call_function(self, target, args, kwargs):
        if self.meta:
            args, kwargs = _meta(args), _meta(kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if self.meta:
            args, kwargs = _meta(args), _meta(kwargs)
        return super().call_method(target, args, kwargs)

    def fetch_attr(self, target: str) -> Any:
        value = super().fetch_attr(target)
        return _meta(value) if self.meta else value


class _Runner(torch.nn.Module):
    """Lets ``torch.func.functional_call`` swap in meta parameters around an Interpreter run."""

    def __init__(self, gm: torch.fx.GraphModule, meta: bool) -> None:
        super().__init__()
        self.gm = gm
        self.recorder = _Recorder(gm, meta)

    def forward(self, *args: Any) -> Any:
        return self.recorder.run(*args)


def propagate(gm: torch.fx.GraphModule, example_inputs: tuple) -> dict[torch.fx.Node, Any]:
    """Example values of every node of ``gm`` for ``example_inputs``."""
    runner = _Runner(gm, meta=True)
    state = {f"gm.{k}": torch.empty_like(v, device="meta")
             for k, v in [*gm.named_parameters(), *gm.named_buffers()]}
    try:
        with torch.no_grad():
            torch.func.functional_call(runner, state, _meta(tuple(example_inputs)),
                                       strict=False, tie_weights=True)
        return runner.recorder.vals
    except Exception:  # no meta kernel, data-dependent op ...: run for real
        runner = _Runner(gm, meta=False)
        with preserved(gm), torch.no_grad():  # eval: same shapes, statistics untouched
            set_training(gm, False)
            runner(*example_inputs)
        return runner.recorder.vals
