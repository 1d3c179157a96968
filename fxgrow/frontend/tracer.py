"""Symbolic tracing with a leaf-aware tracer.

torch.nn's own modules (Conv2d, BatchNorm2d, Linear, ...) stay ``call_module`` leaves so the
analysis sees the modules that own parameters; user-named modules (by type or qualified name)
and timm's no-trace modules/functions that fxgrow has a rule for are kept whole as well.  The
others are traced *through* (their ops get the ordinary rules instead of one blocker); one that
fx cannot trace through (control flow on sizes) is kept whole after all, and the trace retried."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.fx
import torch.fx._symbolic_trace as _fx_trace

from ..errors import TraceError


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


class LeafTracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` that also keeps the given module types / qualified names as leaves."""

    def __init__(self, leaf_modules: Iterable[type | str] = (),
                 autowrap_functions: Iterable[Callable] = (),
                 through: Iterable[type | Callable] = ()) -> None:
        """``through``: timm no-trace modules types and functions traced through."""
        through = set(through)
        timm_modules, timm_functions = _timm_notrace()
        timm_modules = tuple(t for t in timm_modules if t not in through)
        timm_functions = tuple(f for f in timm_functions if f not in through)
        leaves = list(leaf_modules)
        from ..analysis.rules.registry import LEAVES, load_deferred
        load_deferred()  # the rules of the libraries in use declare their leaves
        self.leaf_types = tuple(t for t in leaves if isinstance(t, type)) + timm_modules + \
            tuple(LEAVES)
        self.leaf_names = {t for t in leaves if isinstance(t, str)}
        super().__init__(autowrap_functions=tuple(autowrap_functions) + timm_functions)

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: torch.nn.Module, *, leaf_modules: Iterable[type | str] = (),
          autowrap_functions: Iterable[Callable] = (),
          concrete_args: dict[str, Any] | None = None) -> torch.fx.GraphModule:
    """``model`` as a ``torch.fx.GraphModule`` (returned as is if it already is one).

    The GraphModule shares the model's parameters; fxgrow never writes to them."""
    if isinstance(model, torch.fx.GraphModule):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
    timm_modules, timm_functions = _timm_notrace()
    modules = {t for t in timm_modules if not _has_rule(t)}
    functions = {f for f in timm_functions if not _has_rule(f)}
    while True:  # trace through what has no rule; keep whole what fx cannot trace through
        tracer = LeafTracer(leaf_modules, autowrap_functions, through=modules | functions)
        try:
            with _unwrapped(functions):
                graph = tracer.trace(model, concrete_args)
            gm = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
            from .modal import make_modal  # F.dropout(training=...) follows the mode again
            return make_modal(gm, model.training)
        except Exception as e:
            stack = list(getattr(tracer, "module_stack", {}).values())
            culprit = _culprit(e, functions) or \
                next((t for _path, t in reversed(stack) if t in modules), None)
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
