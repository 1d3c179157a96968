"""Shape propagation: run the graph once on meta tensors (no arithmetic, no memory) and keep
every node's example value.  Falls back to the real example inputs when an op has no meta
kernel or needs data (``.item()``, data-dependent shapes)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.utils import _pytree as pytree

from ..errors import GraphRunError
from ..modes import set_training, untouched
from .rules.registry import has_trait

_META = torch.device("meta")


def _conv(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.device != _META:
        return v.to(_META)
    if isinstance(v, torch.device):
        return _META
    return v


# leaves that ``_conv`` returns unchanged, and containers ``_meta`` may look through itself
_PLAIN = frozenset(
    {
        int,
        float,
        bool,
        complex,
        str,
        type(None),
        type(...),
        slice,
        torch.dtype,
        torch.layout,
        torch.memory_format,
        torch.Size,
    }
)
_CONTAINERS = frozenset({tuple, list, dict, immutable_list, immutable_dict})


def _all_meta(x: Any) -> bool:
    """True if ``_meta(x)`` would only rebuild ``x`` (no tensor off meta, no device); False
    when unsure (other container types: ``_meta`` then maps them with pytree)."""
    t = type(x)
    if t in _PLAIN:
        return True
    if t is torch.Tensor:
        return x.device == _META
    if t in _CONTAINERS:
        return all(_all_meta(v) for v in (x.values() if isinstance(x, dict) else x))
    return False


def _meta(x: Any) -> Any:
    """``x`` with every tensor moved to meta and every device made meta (pytree leaves)."""
    if _all_meta(x):  # the common case: already meta; pytree would return an equal copy
        return x
    return pytree.tree_map(_conv, x)


# -- fast paths: output shapes of the commonest ops, without running meta kernels ------------
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
    if has_trait(t, "same_shape", exact=True):
        return _like(x, x.shape)
    if t is torch.nn.Linear and x.dim() >= 1 and x.shape[-1] == m.in_features:
        return _like(x, (*x.shape[:-1], m.out_features))
    if (
        type(m) is torch.nn.Conv2d  # (``t is``, written so that type checkers narrow ``m``)
        and x.dim() == 4
        and isinstance(m.padding, tuple)
        and x.shape[1] == m.in_channels
    ):
        h, w = (
            _window(n, k, s, p, d)
            for n, k, s, p, d in zip(x.shape[2:], m.kernel_size, m.stride, m.padding, m.dilation)
        )
        return _like(x, (x.shape[0], m.out_channels, h, w))
    if t in (torch.nn.MaxPool2d, torch.nn.AvgPool2d) and x.dim() == 4 and not m.ceil_mode:
        pair = lambda v: v if isinstance(v, tuple) else (v, v)
        dil = pair(getattr(m, "dilation", 1))
        h, w = (
            _window(n, k, s, p, d)
            for n, k, s, p, d in zip(
                x.shape[2:],
                pair(m.kernel_size),
                pair(m.stride or m.kernel_size),
                pair(m.padding),
                dil,
            )
        )
        return _like(x, (*x.shape[:2], h, w))
    if t is torch.nn.AdaptiveAvgPool2d and x.dim() == 4:
        given = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
        size = tuple(n if o is None else o for n, o in zip(x.shape[2:], given))
        return _like(x, (*x.shape[:2], *size))
    return None


def _fast_function(target, args: tuple, kwargs: dict):
    if (
        has_trait(target, "same_shape")
        and args
        and isinstance(args[0], torch.Tensor)
        and not kwargs.get("inplace", False)
    ):
        return _like(args[0], args[0].shape)
    if (
        has_trait(target, "same_shape_operands")
        and len(args) == 2
        and not kwargs
        and all(isinstance(a, torch.Tensor) for a in args)
        and args[0].shape == args[1].shape
        and args[0].dtype == args[1].dtype
    ):
        return _like(args[0], args[0].shape)
    if (
        target is torch.cat
        and not kwargs.get("out")
        and args
        and isinstance(args[0], (list, tuple))
        and args[0]
        and all(isinstance(a, torch.Tensor) for a in args[0])
    ):
        ts = args[0]
        d = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if (
            isinstance(d, int)
            and len({t.dtype for t in ts}) == 1
            and len({t.dim() for t in ts}) == 1
        ):
            d %= ts[0].dim()
            rest = {tuple(t.shape[:d]) + tuple(t.shape[d + 1 :]) for t in ts}
            if len(rest) == 1:
                shape = list(ts[0].shape)
                shape[d] = sum(t.shape[d] for t in ts)
                return _like(ts[0], shape)
    return None


def _user_function(target: Any) -> bool:
    """A call_function target that is neither torch's nor a Python operator (a wrapped or
    no-trace function, which may mutate the lists it is given)."""
    module = getattr(target, "__module__", None) or ""
    return not (
        module == "torch" or module.startswith("torch.") or module in ("_operator", "builtins")
    ) and not isinstance(target, torch._ops.OpOverload)


def _plain(x: Any) -> Any:
    """``x`` with fx's immutable lists and dicts made plain (fresh copies): a user function
    called by the graph gets the mutable lists its code was written for, as the generated
    ``forward`` gives it (torchvision's Swin3d helper assigns into its size list)."""
    if isinstance(x, immutable_list) or type(x) is list:
        return [_plain(v) for v in x]
    if isinstance(x, immutable_dict) or type(x) is dict:
        return {k: _plain(v) for k, v in x.items()}
    if type(x) is tuple:
        return tuple(_plain(v) for v in x)
    return x


class _Recorder(torch.fx.Interpreter):
    """Runs the graph on the real example inputs and keeps every node's value; a failure is
    a :class:`GraphRunError` naming the node."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.extra_traceback = False
        self.vals: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as e:
            raise GraphRunError(n, e) from e
        self.vals[n] = result
        return result

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if _user_function(target):
            args, kwargs = _plain(args), _plain(kwargs)
        return super().call_function(target, args, kwargs)


class _MetaRun(torch.fx.Interpreter):
    """Every node's value on meta tensors: what an ``Interpreter`` run with every parameter and
    buffer swapped for a meta tensor (``functional_call``) computes, but swapping only where a
    value is read: a ``get_attr`` of a parameter or buffer, and a module that has no fast path
    (``torch.func.functional_call`` on that module alone).  One meta tensor per real tensor, so
    tied tensors stay one object.  Errors propagate unchanged (the caller falls back to a real
    run)."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.extra_traceback = False
        self._metas: dict[int, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        # the base class's, without setting fx's current-node metadata (nothing traces here)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        return getattr(self, n.op)(n.target, args, kwargs)

    def _meta_of(self, t: torch.Tensor) -> torch.Tensor:
        m = self._metas.get(id(t))
        if m is None:
            m = self._metas[id(t)] = torch.empty_like(t, device="meta")
        return m

    def _module(self, path: str) -> Any:
        """The submodule at ``path`` (``submodules`` lists a shared module under one path)."""
        mod = self.submodules.get(path)
        return self.fetch_attr(path) if mod is None else mod

    def _registered(self, target: str, value: Any) -> bool:
        owner, _, name = target.rpartition(".")
        try:
            mod = self._module(owner)
        except RuntimeError:  # not under a module: functional_call would not swap it
            return False
        if not isinstance(mod, torch.nn.Module):
            return False
        return mod._parameters.get(name) is value or mod._buffers.get(name) is value

    def get_attr(self, target: Any, args: tuple, kwargs: dict) -> Any:
        value = self.fetch_attr(target)  # missing: the real run says so
        if isinstance(value, torch.Tensor) and self._registered(target, value):
            return self._meta_of(value)
        return _meta(value)

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        sub = self._module(target)
        result = _fast_module(sub, args, kwargs)
        if result is not None:
            return result
        state = {
            k: self._meta_of(v)
            for k, v in (
                *sub.named_parameters(remove_duplicate=False),
                *sub.named_buffers(remove_duplicate=False),
            )
        }
        if not state:
            return sub(*args, **kwargs)
        return torch.func.functional_call(sub, state, args, kwargs, strict=False, tie_weights=True)

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if has_trait(target, "metadata_check"):
            return None
        args, kwargs = _meta(args), _meta(kwargs)
        if _user_function(target):
            args, kwargs = _plain(args), _plain(kwargs)
        result = _fast_function(target, args, kwargs)
        return target(*args, **kwargs) if result is None else result

    def call_method(self, target: Any, args: tuple, kwargs: dict) -> Any:
        return super().call_method(target, _meta(args), _meta(kwargs))


def _run_meta(gm: torch.fx.GraphModule, example_inputs: tuple) -> dict[torch.fx.Node, Any]:
    """Every node's value on meta tensors (see :class:`_MetaRun`)."""
    run = _MetaRun(gm)
    run.run(*_meta(tuple(example_inputs)))
    return run.env


def propagate(gm: torch.fx.GraphModule, example_inputs: tuple) -> dict[torch.fx.Node, Any]:
    """Example values of every node of ``gm`` for ``example_inputs``: meta tensors, or the real
    values where the meta run fails (an op without a meta kernel, data-dependent code).
    Raises :class:`GraphRunError` naming the node where the real run fails too; ``gm`` and the
    modules it shares with the model are left as they were."""
    try:
        with torch.no_grad(), untouched(gm):
            return _run_meta(gm, example_inputs)
    except Exception:  # no meta kernel, data-dependent op ...: run for real
        pass
    recorder = _Recorder(gm)
    try:
        with untouched(gm), torch.no_grad():  # eval: same shapes, statistics untouched
            set_training(gm, False)
            recorder.run(*example_inputs)
    except GraphRunError:
        raise
    except Exception as e:  # before any node ran: the number of inputs
        raise GraphRunError(None, e) from e
    return recorder.vals
