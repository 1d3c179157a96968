"""Shape propagation: run the graph once on meta tensors (no arithmetic, no memory) and keep
every node's example value.  Falls back to the real example inputs when an op has no meta
kernel or needs data (``.item()``, data-dependent shapes)."""
from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as pytree


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.vals: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        self.vals[n] = result
        return result


class _Runner(torch.nn.Module):
    """Lets ``torch.func.functional_call`` swap in meta parameters around an Interpreter run."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm
        self.recorder = _Recorder(gm)

    def forward(self, *args: Any) -> Any:
        return self.recorder.run(*args)


def _to_meta(x: Any) -> Any:
    return pytree.tree_map(
        lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, x)


def propagate(gm: torch.fx.GraphModule, example_inputs: tuple) -> dict[torch.fx.Node, Any]:
    """Example values of every node of ``gm`` for ``example_inputs``."""
    runner = _Runner(gm)
    state = {f"gm.{k}": torch.empty_like(v, device="meta")
             for k, v in [*gm.named_parameters(), *gm.named_buffers()]}
    try:
        with torch.no_grad():
            torch.func.functional_call(runner, state, _to_meta(tuple(example_inputs)),
                                       strict=False, tie_weights=True)
        return runner.recorder.vals
    except Exception:  # no meta kernel, data-dependent op, tensor attributes ...: run for real
        runner = _Runner(gm)
        training = {m: m.training for m in gm.modules()}
        try:  # eval: same shapes, and batch-norm running statistics stay untouched
            gm.eval()
            with torch.no_grad():
                runner(*example_inputs)
        finally:
            for m, t in training.items():
                m.train(t)
        return runner.recorder.vals
