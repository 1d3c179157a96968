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


# -- fast paths: output shapes of the commonest ops, without running meta kernels ------------
_SAME_SHAPE_MODULES = (
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.ReLU,
    torch.nn.ReLU6, torch.nn.SiLU, torch.nn.GELU, torch.nn.Hardswish, torch.nn.Hardsigmoid,
    torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Identity,
    torch.nn.LeakyReLU, torch.nn.ELU, torch.nn.Mish,
)


def _like(x: torch.Tensor, shape) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=x.dtype, device=_META)


def _window(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _fast_module(m: torch.nn.Module, args: tuple, kwargs: dict):
    """Output of ``m`` on meta ``args`` from its attributes, or None to run it."""
    if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
        return None
    x = args[0]
    t = type(m)
    if t in _SAME_SHAPE_MODULES:
        return _like(x, x.shape)
    if t is torch.nn.Linear and x.dim() >= 1 and x.shape[-1] == m.in_features:
        return _like(x, (*x.shape[:-1], m.out_features))
    if t is torch.nn.Conv2d and x.dim() == 4 and isinstance(m.padding, tuple) and \
            x.shape[1] == m.in_channels:
        h, w = (_window(n, k, s, p, d) for n, k, s, p, d in
                zip(x.shape[2:], m.kernel_size, m.stride, m.padding, m.dilation))
        return _like(x, (x.shape[0], m.out_channels, h, w))
    if t in (torch.nn.MaxPool2d, torch.nn.AvgPool2d) and x.dim() == 4 and not m.ceil_mode:
        pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
        dil = pair(getattr(m, "dilation", 1))
        h, w = (_window(n, k, s, p, d) for n, k, s, p, d in
                zip(x.shape[2:], pair(m.kernel_size), pair(m.stride or m.kernel_size),
                    pair(m.padding), dil))
        return _like(x, (*x.shape[:2], h, w))
    if t is torch.nn.AdaptiveAvgPool2d and x.dim() == 4:
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
        size = tuple(n if o is None else o for n, o in zip(x.shape[2:], size))
        return _like(x, (*x.shape[:2], *size))
    return None


_SAME_SHAPE_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.sigmoid,
                         torch.nn.functional.silu, torch.nn.functional.gelu}
_ELEMENTWISE = {__import__("operator").add, __import__("operator").iadd, torch.add,
                __import__("operator").mul, torch.mul}


def _fast_function(target, args: tuple, kwargs: dict):
    if target in _SAME_SHAPE_FUNCTIONS and args and isinstance(args[0], torch.Tensor) and \
            not kwargs.get("inplace", False):
        return _like(args[0], args[0].shape)
    if target in _ELEMENTWISE and len(args) == 2 and not kwargs and \
            all(isinstance(a, torch.Tensor) for a in args) and args[0].shape == args[1].shape \
            and args[0].dtype == args[1].dtype:
        return _like(args[0], args[0].shape)
    if target is torch.cat and not kwargs.get("out") and args and \
            isinstance(args[0], (list, tuple)) and args[0] and \
            all(isinstance(a, torch.Tensor) for a in args[0]):
        ts = args[0]
        d = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if isinstance(d, int) and len({t.dtype for t in ts}) == 1 and \
                len({t.dim() for t in ts}) == 1:
            d %= ts[0].dim()
            rest = {tuple(t.shape[:d]) + tuple(t.shape[d + 1:]) for t in ts}
            if len(rest) == 1:
                shape = list(ts[0].shape)
                shape[d] = sum(t.shape[d] for t in ts)
                return _like(ts[0], shape)
    return None


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
            fast = _fast_function(target, args, kwargs)
            if fast is not None:
                return fast
        return super().call_function(target, args, kwargs)

    def call_module(self, target, args, kwargs):
        if self.meta:
            fast = _fast_module(self.fetch_attr(target), args, kwargs)
            if fast is not None:
                return fast
        return super().call_module(target, args, kwargs)

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
