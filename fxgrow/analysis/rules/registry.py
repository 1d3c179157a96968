"""The op-rule registry: one table from fx targets to the rule that knows their channel maths.

A rule is ``fn(cx: RuleContext) -> value`` where the value describes the node's output
(:class:`~fxgrow.analysis.values.TensorInfo` for tensors).  Rules are registered for

* module classes (``call_module``), matched by exact type, or by an ancestor whose ``forward``
  the class does not override -- a subclass with its own ``forward`` is *not* matched;
* functions (``call_function``), matched by identity;
* method names (``call_method``).

Anything without a rule blocks every channel group it touches (see ``dependency.unknown_op``).
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch.fx


@dataclass(frozen=True)
class RuleEntry:
    fn: Callable
    kind: str  # "module" | "function" | "method"
    target: Any

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()


MODULES: dict[type, RuleEntry] = {}
FUNCTIONS: dict[Any, RuleEntry] = {}
METHODS: dict[str, RuleEntry] = {}


def rule(*targets: Any) -> Callable[[Callable], Callable]:
    """Register ``fn`` for module classes, functions and method names (strings)."""

    def register(fn: Callable) -> Callable:
        for t in targets:
            if isinstance(t, str):
                METHODS[t] = RuleEntry(fn, "method", t)
            elif isinstance(t, type):
                MODULES[t] = RuleEntry(fn, "module", t)
            else:
                FUNCTIONS[t] = RuleEntry(fn, "function", t)
        return fn

    return register


LEAVES: set[type] = set()
"""Module classes the fx front end keeps whole because their rule covers the whole forward
(timm's relative-position logits, whose inner ops read a table's rows by position)."""


def leaf(*classes: type) -> None:
    """Keep ``classes`` whole when tracing (each must have a module rule)."""
    LEAVES.update(classes)


DEFERRED = {"timm": "timm_layers", "torchvision": "vision"}
"""Library -> the rule module for its own layers, registered once the library is imported (a
model using timm's classes has imported timm): fxgrow itself never imports them up front."""
_loaded: set[str] = set()


def load_deferred(everything: bool = False) -> None:
    """Register the rules of the libraries in use (``everything``: of every installed one)."""
    for library, module in DEFERRED.items():
        if module not in _loaded and (everything or library in sys.modules):
            _loaded.add(module)
            importlib.import_module(f"{__package__}.{module}")


def lookup(node: torch.fx.Node, module: Any = None) -> RuleEntry | None:
    if len(_loaded) < len(DEFERRED):
        load_deferred()
    if node.op == "call_function":
        try:
            return FUNCTIONS.get(node.target)
        except TypeError:  # unhashable target
            return None
    if node.op == "call_method":
        return METHODS.get(node.target)
    if node.op == "call_module":
        cls = type(module)
        entry = MODULES.get(cls)
        if entry is not None:
            return entry
        for base in cls.__mro__[1:]:
            entry = MODULES.get(base)
            if entry is not None:
                return entry if getattr(cls, "forward") is getattr(base, "forward") else None
        return None
    return None


def all_rules() -> list[RuleEntry]:
    """Every registered rule (for the generated op-rule reference)."""
    load_deferred(everything=True)
    return [*MODULES.values(), *FUNCTIONS.values(), *METHODS.values()]
