"""The public hook: rules for a user's own modules, functions and methods.

``fxgrow.register_rule(MyLayer, "pointwise")`` tells fxgrow the channel maths of ``MyLayer``;
without a rule an op blocks every channel group it touches.  A module class with a rule is kept
whole when tracing (the rule covers its whole ``forward``, which is not traced into), so a layer
fx cannot trace (data-dependent control flow, iteration over a tensor) can still be grown
through.  ``fn`` is a rule ``fn(cx: RuleContext) -> value`` or the name of a built-in one
(:data:`BUILTIN`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .binary import binary
from .elementwise import unary
from .registry import RegistrationError, leaf, rule

BUILTIN: dict[str, Callable] = {
    "pointwise": unary,  # one tensor in, every axis passes through (activations, ...)
    "broadcast": binary,  # elementwise over broadcast operands (add, mul, where, ...)
}
"""Named built-in rules a user's op may share."""


def register_rule(
    target: Any, fn: Callable | str, *, aten: Iterable[str] = (), traits: Iterable[str] = ()
) -> Callable:
    """Register ``fn`` as the rule of ``target``: a module class (call_module; also made a
    tracing leaf), a function (call_function) or a method name (call_method, a string); ``aten``
    names ATen overloads ("name.overload") that share the rule, ``traits`` its traits (keys of
    ``registry.TRAITS``).  Returns the rule function.

    A target that already has a different rule, an unknown built-in name or trait, or a target
    of another kind raise :class:`RegistrationError` saying what to pass instead."""
    if isinstance(fn, str):
        if fn not in BUILTIN:
            raise RegistrationError(
                f"no built-in rule {fn!r}; pass one of {sorted(BUILTIN)} "
                f"or a function fn(cx: RuleContext) -> value"
            )
        fn = BUILTIN[fn]
    if not callable(fn):
        raise RegistrationError(
            f"the rule must be a function fn(cx: RuleContext) -> value or "
            f"one of {sorted(BUILTIN)}, not {type(fn).__name__}"
        )
    import torch

    module = isinstance(target, type) and issubclass(target, torch.nn.Module)
    if not (module or isinstance(target, str) or callable(target) and not isinstance(target, type)):
        raise RegistrationError(
            f"cannot register a rule for {target!r}: pass a torch.nn.Module "
            f"subclass, a function, or a method name (a string)"
        )
    rule(target, aten=aten, traits=traits)(fn)
    if module:
        leaf(target)
    return fn
