"""The op-rule registry: one table from fx targets to the rule that knows their channel maths.

A rule is ``fn(cx: RuleContext) -> value`` where the value describes the node's output
(:class:`~fxgrow.analysis.values.TensorInfo` for tensors).  Rules are registered for

* module classes (``call_module``), matched by exact type, or by an ancestor whose ``forward``
  the class does not override -- a subclass with its own ``forward`` is *not* matched;
* functions (``call_function``), matched by identity;
* method names (``call_method``);
* ATen overloads (``torch.export`` graphs), named in the same ``@rule`` as their torch
  counterparts: ``@rule(torch.relu, F.relu, "relu", aten=("relu.default", "relu_.default"))``.

Anything without a rule blocks every channel group it touches (see ``dependency.unknown_op``).

An entry also carries *traits*: facts about the op that passes other than the channel analysis
rely on (``@rule(nn.Dropout, traits=("pointwise", "dropout"))``), so the registry is the one op
table: see :data:`TRAITS` for each trait's meaning and :func:`has_trait` to ask.  A function
may also name the ``torch.nn`` module class computing it (``@rule(F.gelu, as_module=nn.GELU)``:
:func:`module_for`), so a functional call can become a module call.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.fx

from ...errors import RegistrationError

TRAITS = {
    "pointwise": "computes each output element from the same element of its operand(s)",
    "activation": "a pointwise nonlinearity Net2DeeperNet may repeat when it is idempotent "
    "(``rewrite.activation``)",
    "dropout": "random in training, the identity in eval: verification turns it off",
    "keeps_zero": "maps an all-zero input to exactly zero in every mode (a zeroed residual "
    "branch stays zero through it)",
    "add": "the sum of its two operands (a residual add)",
    "mul": "the product of its operands",
    "reshape": "rearranges the positions of its operand without changing a value (view, "
    "reshape, flatten, unflatten)",
    "moves_positions": "every output element is an element of its operands, moved, selected "
    "or joined, never computed (cat, split, chunk, narrow, getitem, channel shuffle, contiguous, "
    "flatten, identity): fresh units can be followed through it by their labels",
    "size_read": "reads sizes (size, dim, getattr), never a value",
    "reads_metadata": "a method reading its tensor's metadata (sizes, rank, dtype, device), "
    "never its values: a parameter it reads is neither copied nor divided there",
    "swap_axes": "swaps the two axes its arguments 1 and 2 name (transpose)",
    "matrix_transpose": "swaps axes 0 and 1 of an at most 2-d tensor (t)",
    "extremum": "the max or min over its dims (amax, amin): exact over replicated units",
    "permute_axes": "puts its operand's axes in the order its arguments name (permute)",
    "alias": "re-labels its operand: the same values, copied or moved to another dtype or "
    "device (a residual stream passes through it)",
    "metadata_check": "checks its operand's metadata and computes nothing (skipped on meta "
    "tensors and when walking a residual stream)",
    "same_shape": "its output has the shape and dtype of its first (tensor) argument",
    "same_shape_operands": "with operands of one shape and dtype, its output has them",
    "softmax": "the softmax along its ``dim`` (hand-written attention is recognised by it)",
    "keeps_positions": "a scaling, mask, cast or dropout of its first operand: every output "
    "element comes from the element at the same position (attention scores and weights pass "
    "through it, ``attention_pattern``)",
    "matmul": "a matrix product of its operands (``@``, matmul, bmm, einsum)",
    "affine": "``op(input, weight, bias, ...)``: linear in ``weight`` plus ``bias``, so zero "
    "when both are (linear, conv)",
    "bias_plus_product": "``bias + mat1 @ mat2`` (addmm): zero when ``bias`` and ``mat2`` are",
    "scaled_norm": "``normalise(input) * weight + bias`` (layer_norm): scaling ``weight`` and "
    "``bias`` scales its output",
    "table_lookup": "rows of its table ``weight`` picked by index (embedding): scaling the "
    "table scales its output",
    "commutes_with_scale": "``f(x * s) == f(x) * s`` for a scale ``s`` per unit, in every mode "
    "(dropout masks and rescales units)",
}
"""Trait -> what an op having it guarantees.  Only the ops listed with a trait have it."""


@dataclass(frozen=True)
class RuleEntry:
    """A registered rule: its function, what it matches (``kind`` and ``target``) and its traits."""

    fn: Callable
    kind: str  # "module" | "function" | "method"
    target: Any
    traits: frozenset[str] = frozenset()
    as_module: type | None = None
    """The ``torch.nn`` class computing this function: ``as_module(**keyword arguments)``."""

    @property
    def doc(self) -> str:
        """The rule function's docstring, stripped ("" if none)."""
        return (self.fn.__doc__ or "").strip()


MODULES: dict[type, RuleEntry] = {}
FUNCTIONS: dict[Any, RuleEntry] = {}
METHODS: dict[str, RuleEntry] = {}


def aten_op(qualified: str) -> torch._ops.OpOverload:
    """The ATen ``OpOverload`` named ``"name.overload"`` (e.g. ``"relu.default"``,
    ``"add.Tensor"``); a name this torch does not have raises :class:`RegistrationError`."""
    name, dot, overload = qualified.partition(".")
    if not dot or not name or not overload:
        raise RegistrationError(
            f"ATen overload {qualified!r}: write it as 'name.overload' "
            f"(e.g. 'relu.default', 'add.Tensor')"
        )
    try:
        packet = getattr(torch.ops.aten, name)
    except (AttributeError, RuntimeError):
        packet = None
    op = (
        getattr(packet, overload, None)
        if isinstance(packet, torch._ops.OpOverloadPacket) and overload in packet.overloads()
        else None
    )
    if not isinstance(op, torch._ops.OpOverload):
        raise RegistrationError(f"aten.{qualified} does not exist in torch {torch.__version__}")
    return op


def _table(target: Any) -> tuple[dict, str]:
    if isinstance(target, str):
        return METHODS, "method"
    if isinstance(target, type):
        return MODULES, "module"
    return FUNCTIONS, "function"


def rule(
    *targets: Any,
    aten: Iterable[str] = (),
    traits: Iterable[str] = (),
    as_module: type | None = None,
) -> Callable[[Callable], Callable]:
    """Register ``fn`` for module classes, functions, method names (strings) and the ATen
    overloads ``aten`` names (``"relu.default"``: what ``torch.export`` graphs call), giving
    those targets ``traits`` (keys of :data:`TRAITS`) and ``as_module``, the ``torch.nn``
    class computing them when called with the same keyword arguments (:func:`module_for`).

    Every target has one rule: registering a target twice, or naming an overload this torch
    does not have, raises :class:`RegistrationError` (at import, where the rule is).  One
    function may be registered by several ``@rule`` lines (one per set of traits); a target
    registered again for the same function gains the new traits."""
    overloads = tuple(aten_op(q) for q in ((aten,) if isinstance(aten, str) else aten))
    traits = frozenset((traits,) if isinstance(traits, str) else traits)
    unknown = sorted(traits - TRAITS.keys())
    if unknown:
        raise RegistrationError(f"unknown traits {unknown}; known: {sorted(TRAITS)}")
    if as_module is not None and not (
        isinstance(as_module, type) and issubclass(as_module, torch.nn.Module)
    ):
        raise RegistrationError(f"as_module must be a torch.nn.Module class, not {as_module!r}")

    def register(fn: Callable) -> Callable:
        for t in (*targets, *overloads):
            table, kind = _table(t)
            old = table.get(t)
            if old is not None and not _same_fn(old.fn, fn):
                raise RegistrationError(
                    f"{_name(t)} already has the rule {old.fn.__module__}.{old.fn.__qualname__};"
                    f" {fn.__module__}.{fn.__qualname__} would replace it"
                )
            old_module = old.as_module if old else None
            if as_module is not None and old_module not in (None, as_module):
                raise RegistrationError(
                    f"{_name(t)} is already computed by {old_module.__qualname__}, "
                    f"not {as_module.__qualname__}"
                )
            table[t] = RuleEntry(
                fn,
                kind,
                t,
                traits | (old.traits if old else frozenset()),
                as_module or old_module,
            )
        return fn

    return register


def _same_fn(a: Callable, b: Callable) -> bool:
    """One function (or the same one defined again by a module reload)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target._opname}.{target._overloadname}"
    if isinstance(target, str):
        return f"method {target!r}"
    return getattr(target, "__qualname__", None) or repr(target)


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
    """The rule for a call node, or None.  A module subclass inherits its base's rule only if it
    keeps the base's ``forward``."""
    if len(_loaded) < len(DEFERRED):
        load_deferred()
    if node.op == "call_function":
        try:
            return FUNCTIONS.get(node.target)
        except TypeError:  # unhashable target
            return None
    if node.op == "call_method":
        return METHODS.get(cast(str, node.target))  # a call_method's target is the name
    if node.op == "call_module":
        cls = type(module)
        entry = MODULES.get(cls)
        if entry is not None:
            return entry
        for base in cls.__mro__[1:]:
            entry = MODULES.get(base)
            if entry is not None:
                # a base with a module rule is an nn.Module class (rules are for modules)
                forward = cast(type[torch.nn.Module], base).forward
                return entry if cls.forward is forward else None
        return None
    return None


def has_trait(target: Any, trait: str, exact: bool = False) -> bool:
    """Whether the rule of ``target`` -- a module (instance or class: its own entry, or with
    ``exact`` False that of any base class, as ``isinstance`` would), a function, an ATen
    overload or a method name -- was registered with ``trait``."""
    if trait not in TRAITS:
        raise KeyError(f"unknown trait {trait!r}; known: {sorted(TRAITS)}")
    if len(_loaded) < len(DEFERRED):
        load_deferred()
    if isinstance(target, torch.nn.Module):
        target = type(target)
    if isinstance(target, type):
        return any(
            trait in e.traits
            for e in (MODULES.get(c) for c in (target.__mro__[:1] if exact else target.__mro__))
            if e is not None
        )
    try:
        entry = (METHODS if isinstance(target, str) else FUNCTIONS).get(target)
    except TypeError:  # unhashable target
        return False
    return entry is not None and trait in entry.traits


def node_has_trait(node: torch.fx.Node, trait: str, gm: torch.nn.Module | None = None) -> bool:
    """Whether ``node`` calls an op with ``trait`` (a module call needs ``gm`` to find it)."""
    if node.op in ("call_function", "call_method"):
        return has_trait(node.target, trait)
    if node.op == "call_module" and gm is not None:
        # a call_module node's target is its module's path (a str)
        return has_trait(gm.get_submodule(cast(str, node.target)), trait)
    return False


def module_for(target: Any) -> type | None:
    """The ``torch.nn`` class its rule says computes the function, ATen overload or method
    ``target`` (``nn.GELU`` for ``F.gelu``), or None."""
    if len(_loaded) < len(DEFERRED):
        load_deferred()
    try:
        entry = (METHODS if isinstance(target, str) else FUNCTIONS).get(target)
    except TypeError:  # unhashable target
        return None
    return entry.as_module if entry is not None else None


def with_trait(trait: str) -> tuple:
    """Every registered target with ``trait`` (module classes, functions, overloads, method
    names)."""
    return tuple(e.target for e in all_rules() if trait in e.traits)


def all_rules() -> list[RuleEntry]:
    """Every registered rule (for the generated op-rule reference)."""
    load_deferred(everything=True)
    return [*MODULES.values(), *FUNCTIONS.values(), *METHODS.values()]
