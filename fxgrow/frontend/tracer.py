"""Symbolic tracing with a leaf-aware tracer.

torch.nn's own modules (Conv2d, BatchNorm2d, Linear, ...) stay ``call_module`` leaves so the
analysis sees the modules that own parameters; user-named modules (by type or qualified name)
and timm's no-trace modules/functions are kept whole as well."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.fx

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


class LeafTracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` that also keeps the given module types / qualified names as leaves."""

    def __init__(self, leaf_modules: Iterable[type | str] = (),
                 autowrap_functions: Iterable[Callable] = ()) -> None:
        timm_modules, timm_functions = _timm_notrace()
        leaves = list(leaf_modules)
        self.leaf_types = tuple(t for t in leaves if isinstance(t, type)) + timm_modules
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
    tracer = LeafTracer(leaf_modules, autowrap_functions)
    try:
        graph = tracer.trace(model, concrete_args)
    except Exception as e:
        stack = list(getattr(tracer, "module_stack", {}).items())
        where = ""
        if stack and stack[-1][0]:
            path, kind = stack[-1]
            kind_name = kind if isinstance(kind, str) else getattr(kind, "__qualname__", kind)
            where = f" inside module {path!r} ({kind_name})"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}{where}: {first}. "
            f"Pass leaf_modules=[...] naming that module (its type or qualified name) to keep "
            f"it as one opaque call, or use fxgrow's torch.export front end.") from e
    name = type(model).__name__
    from .modal import make_modal  # F.dropout(training=self.training) follows the mode again
    return make_modal(torch.fx.GraphModule(tracer.root, graph, name), model.training)
