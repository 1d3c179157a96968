"""Symbolic tracing with a leaf-aware tracer.

torch.nn's own modules (Conv2d, BatchNorm2d, Linear, ...) stay ``call_module`` leaves so the
analysis sees the modules that own parameters; user-named modules (by type or qualified name)
and timm's no-trace modules/functions that fxgrow has a rule for are kept whole as well.  The
others are traced *through* (their ops get the ordinary rules instead of one blocker); one that
fx cannot trace through is kept whole after all, and the trace retried.

Given example inputs, control flow on sizes (``if H != W``, ``int(x.shape[-1])``) takes the
branch the inputs take, and the graph keeps a guard of that decision (``guards.traced_as``):
the analysis then blocks any channel group whose size decided a branch."""

from __future__ import annotations

import contextlib
import operator
import sys
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

import torch
import torch.fx
import torch.fx._symbolic_trace as _fx_trace

from ..errors import TraceError
from ..fxnode import target_name
from .guards import traced_as
from .specialise import ExampleValues, NotStatic


def _timm_notrace() -> tuple[tuple[type, ...], tuple[Callable, ...]]:
    import sys

    if "timm" not in sys.modules:  # no timm model can be in use: do not import it
        return (), ()
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
    except Exception:  # timm absent or without the registry
        return (), ()
    return tuple(get_notrace_modules()), tuple(get_notrace_functions())


def _has_rule(target: type | Callable) -> bool:
    """Whether fxgrow's analysis has a rule for a module class or a function."""
    from ..analysis.rules.registry import FUNCTIONS, MODULES, load_deferred

    load_deferred()  # timm's layer rules, once timm is in use
    try:
        return target in MODULES if isinstance(target, type) else target in FUNCTIONS
    except TypeError:  # unhashable
        return False


@contextlib.contextmanager
def _unwrapped(functions: Iterable[Callable]) -> Iterator[None]:
    """``torch.fx.wrap``-ed functions among ``functions`` are traced through while inside."""
    patched = _fx_trace._wrapped_fns_to_patch
    keys = [(id(f.__globals__), f.__name__) for f in functions if hasattr(f, "__globals__")]
    saved = {k: patched.pop(k) for k in keys if k in patched}
    try:
        yield
    finally:
        patched.update(saved)


def _culprit(error: BaseException, functions: set) -> Callable | None:
    """The innermost of ``functions`` running when ``error`` was raised."""
    codes = {getattr(f, "__code__", None): f for f in functions}
    found, tb = None, error.__traceback__
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


class _Proxy(torch.fx.Proxy):
    """A proxy that a specialising tracer can turn into a number (``int(p)``, ``float(p)``)."""

    tracer: LeafTracer  # only ``LeafTracer.proxy`` makes these

    def __int__(self) -> int:
        return int(self.tracer.to_number(self, int))

    def __float__(self) -> float:
        return float(self.tracer.to_number(self, float))

    def __index__(self) -> int:
        return int(self.tracer.to_number(self, int))

    def __setitem__(self, key: Any, value: Any) -> None:
        """``t[key] = value`` recorded as ``operator.setitem`` (inside traced-through timm
        leaves only: timm's ConViT fills a tensor of relative positions this way)."""
        if not self.tracer._inside_through():
            raise TypeError(f"'{type(self).__name__}' object does not support item assignment")
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})


def _source_line() -> str:
    """``file:line `code``` of the innermost frame outside torch and fxgrow."""
    import traceback

    for frame in reversed(traceback.extract_stack()):
        name = frame.filename.replace("\\", "/")
        if "/torch/" not in name and "/fxgrow/" not in name:
            short = name.split("site-packages/")[-1]
            return f"{short}:{frame.lineno} `{(frame.line or '').strip()}`"
    return "traced code"


class LeafTracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` that also keeps the given module types / qualified names as leaves,
    and, given ``example_inputs``, specialises control flow on sizes inside the timm leaves it
    traces through to them (guarded)."""

    def __init__(
        self,
        leaf_modules: Iterable[type | str] = (),
        autowrap_functions: Iterable[Callable] = (),
        through: Iterable[type | Callable] = (),
        example_inputs: tuple | None = None,
    ) -> None:
        """``through``: timm no-trace modules types and functions traced through."""
        self.example_inputs = example_inputs
        self.examples: ExampleValues | None = None
        self.buffers_read: dict[str, torch.Tensor] = {}  # get_attr target -> tensor read
        through = set(through)
        self.through_types = tuple(t for t in through if isinstance(t, type))
        self.through_codes = {
            f.__code__ for f in through if not isinstance(f, type) and hasattr(f, "__code__")
        }
        timm_modules, timm_functions = _timm_notrace()
        timm_modules = tuple(t for t in timm_modules if t not in through)
        timm_functions = tuple(f for f in timm_functions if f not in through)
        leaves = list(leaf_modules)
        from ..analysis.rules.registry import LEAVES, load_deferred

        load_deferred()  # the rules of the libraries in use declare their leaves
        self.leaf_types = (
            tuple(t for t in leaves if isinstance(t, type)) + timm_modules + tuple(LEAVES)
        )
        self.leaf_names = {t for t in leaves if isinstance(t, str)}
        super().__init__(autowrap_functions=tuple(autowrap_functions) + timm_functions)

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        """Modules named or typed as leaves (and timm's no-trace ones) stay calls; for the
        others fx decides."""
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def trace(self, root, concrete_args=None):
        """Trace ``root``; with example inputs, values are evaluated on them (lazily) so that
        traced-through code can be specialised."""
        if self.example_inputs is not None and isinstance(root, torch.nn.Module):
            self.examples = ExampleValues(root, self.example_inputs)
        return super().trace(root, concrete_args)

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        """A proxy that can be specialised to a number when example inputs are given."""
        return _Proxy(node, self) if self.examples is not None else super().proxy(node)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        """Inside traced-through timm leaves, buffers are proxies too (``get_attr``): their
        methods then take traced sizes (ConViT: ``self.rel_indices.expand(B, ...)``)."""
        if (
            self.examples is not None
            and isinstance(attr_val, torch.Tensor)
            and not isinstance(attr_val, torch.nn.Parameter)
            and self._inside_through()
        ):
            saved, self.proxy_buffer_attributes = self.proxy_buffer_attributes, True
            try:
                proxy = super().getattr(attr, attr_val, parameter_proxy_cache)
            finally:
                self.proxy_buffer_attributes = saved
            if isinstance(proxy, torch.fx.Proxy) and proxy.node.op == "get_attr":
                self.buffers_read.setdefault(target_name(proxy.node), attr_val)
            return proxy
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def _inside_through(self) -> bool:
        """Whether tracing is inside a timm no-trace module or function traced through."""
        if any(
            isinstance(t, type) and issubclass(t, self.through_types)
            for _path, t in getattr(self, "module_stack", {}).values()
        ):
            return True
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            if frame.f_code in self.through_codes:
                return True
            frame = frame.f_back
        return False

    def _specialised(self, obj: torch.fx.Proxy, convert: Callable) -> Any:
        """``obj``'s example value (converted), with a guard node; TraceError if not static.
        Only inside timm's no-trace modules and functions: elsewhere fx's own rules hold (a
        model fx cannot trace goes to torch.export, as it always did)."""
        if self.examples is None or not self._inside_through():
            if convert is bool:
                return super().to_bool(obj)  # fx's own error
            raise TypeError(f"{convert.__name__}() of a traced value")
        try:
            value = convert(self.examples.concrete(obj.node))
        except NotStatic as e:
            raise torch.fx.proxy.TraceError(
                f"control flow on a value fxgrow cannot fix from the example inputs ({e})"
            ) from None
        self.create_proxy("call_function", traced_as, (obj, value, _source_line()), {})
        return value

    def to_bool(self, obj: torch.fx.Proxy) -> bool:
        """``bool(proxy)`` from the example value, guarded (see ``_specialised``)."""
        return self._specialised(obj, bool)

    def to_number(self, obj: torch.fx.Proxy, kind: type) -> Any:
        """``int(proxy)`` / ``float(proxy)`` from the example value, guarded (see
        ``_specialised``)."""
        return self._specialised(obj, kind)


def _restore_buffers(root: torch.nn.Module, read: dict[str, torch.Tensor]) -> None:
    """Buffers the traced code reassigned (ConViT caches its relative positions in one) get
    back the tensors the graph's ``get_attr`` nodes read, before the GraphModule copies them.
    (The model's own state is restored after capture in any case: ``modes.untouched``.)"""
    for target, tensor in read.items():
        owner, _, name = target.rpartition(".")
        module = root.get_submodule(owner) if owner else root
        if module._buffers.get(name) is not tensor:
            module._buffers[name] = tensor


def trace(
    model: torch.nn.Module,
    *,
    leaf_modules: Iterable[type | str] = (),
    autowrap_functions: Iterable[Callable] = (),
    concrete_args: dict[str, Any] | None = None,
    example_inputs: tuple | None = None,
) -> torch.fx.GraphModule:
    """``model`` as a ``torch.fx.GraphModule`` (returned as is if it already is one).

    With ``example_inputs``, control flow on sizes is specialised to them (guarded: see
    ``guards``).  The GraphModule shares the model's parameters; fxgrow never writes to them."""
    if isinstance(model, torch.fx.GraphModule):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
    timm_modules, timm_functions = _timm_notrace()
    modules = {t for t in timm_modules if not _has_rule(t)}
    functions = {f for f in timm_functions if not _has_rule(f)}
    while True:  # trace through what has no rule; keep whole what fx cannot trace through
        tracer = LeafTracer(
            leaf_modules,
            autowrap_functions,
            through=modules | functions,
            example_inputs=example_inputs,
        )
        try:
            with _unwrapped(functions):
                graph = tracer.trace(model, concrete_args)
            _restore_buffers(tracer.root, tracer.buffers_read)
            gm = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
            from .modal import make_modal  # F.dropout(training=...) follows the mode again

            return make_modal(gm, model.training)
        except Exception as e:
            stack = list(getattr(tracer, "module_stack", {}).values())
            culprit = _culprit(e, functions) or next(
                (t for _path, t in reversed(stack) if t in modules), None
            )
            if culprit is not None:
                modules.discard(culprit)
                functions.discard(culprit)
            else:
                where = ""
                if stack and stack[-1][0]:
                    path, kind = stack[-1]
                    where = f" inside module {path!r} ({getattr(kind, '__qualname__', kind)})"
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise TraceError(
                    f"torch.fx could not trace {type(model).__name__}{where}: {first}. "
                    f"Pass leaf_modules=[...] naming that module (its type or qualified name) "
                    f"to keep it as one opaque call, or use fxgrow's torch.export front end."
                ) from e
