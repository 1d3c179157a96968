"""What ``widen`` is asked to grow: a model and its example inputs, an ``Analysis`` already
made, or a ``WidenPlan`` that carries the analysis it was made from.

Invariant: the student is always of the model passed (or the analysis's own model): an
analysis is reused only for the model it was made of, on the same example inputs with the same
options; any other plan (read from JSON, or made for another model) is checked against the
analysis it is applied to, and a failed check is an :class:`InputError` naming the group and
the model the plan was made for.  Arguments that contradict an analysis are refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import _pytree as pytree

from ..analysis import Analysis, as_tuple
from ..errors import InputError
from .plan import WidenPlan

# analyze's options, with their defaults: they decide what the analysis is
ANALYSIS_OPTIONS: dict[str, Any] = {
    "frontend": "auto",
    "outputs": "fixed",
    "leaf_modules": (),
    "autowrap_functions": (),
}


@dataclass(frozen=True, eq=False)
class Origin:
    """What ``fxgrow.analyze`` analysed: the model as passed, its example inputs, the options
    (``ANALYSIS_OPTIONS``' keys) and, for ``within=``, the submodule path."""

    model: torch.nn.Module
    inputs: tuple
    options: Mapping[str, Any] = field(default_factory=dict)
    within: str | None = None


def options_of(**options: Any) -> dict[str, Any]:
    """``options`` in a comparable form (sequences as tuples)."""
    return {
        k: tuple(v) if k in ("leaf_modules", "autowrap_functions") else v
        for k, v in options.items()
    }


def same_inputs(a: tuple, b: tuple) -> bool:
    """The same example inputs: the same objects, or tensors equal in shape, dtype, device and
    values (and equal other values)."""
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    if spec_a != spec_b:
        return False
    for x, y in zip(leaves_a, leaves_b):
        if x is y:
            continue
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if (x.shape, x.dtype, x.device) != (y.shape, y.dtype, y.device):
                return False
            if x.device.type != "meta" and not torch.equal(x, y):
                return False
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor) or x != y:
            return False
    return True


def _name(model: Any) -> str:
    return type(model).__name__


@dataclass(frozen=True)
class WidenRequest:
    """What to widen: the teacher, its analysis (None: analyse ``model`` on ``inputs``), the
    plan (None: make one from widths / factor), and ``note``: what a failed plan check should
    add (the model the plan was made for)."""

    model: Any
    inputs: tuple | None
    analysis: Analysis | None
    plan: WidenPlan | None
    note: str = ""


def widen_request(
    target: Any,
    example_inputs: Any,
    plan: WidenPlan | None,
    *,
    sized: bool,
    within: str | None,
    options: Mapping[str, Any],
) -> WidenRequest:
    """Resolve ``widen``'s first arguments.  ``sized``: widths or factor were given;
    ``options``: analyze's options as passed (``ANALYSIS_OPTIONS`` keys)."""
    if plan is not None and not isinstance(plan, WidenPlan):
        raise InputError(f"plan= must be a WidenPlan (fxgrow.plan(...)), got {_name(plan)}")
    if isinstance(target, WidenPlan):
        if plan is not None:
            raise InputError("give the plan once: fxgrow.widen(plan) or widen(model, x, plan=plan)")
        if target.analysis is None:
            raise InputError(
                "this WidenPlan holds no analysis (it was read from JSON or written by hand): "
                "pass the model it is for: fxgrow.widen(model, example_inputs, plan=plan)"
            )
        return _from_analysis(target.analysis, example_inputs, target, sized, within, options)
    if isinstance(target, Analysis):
        return _from_analysis(target, example_inputs, plan, sized, within, options)
    if example_inputs is None:
        raise InputError(
            "fxgrow.widen(model, example_inputs, ...) needs example inputs to analyse the "
            "model; or pass an Analysis (fxgrow.analyze) or a WidenPlan (fxgrow.plan)"
        )
    if plan is not None and sized:
        raise InputError(
            "give either plan= or widths= / factor=, not both: the plan fixes the widths"
        )
    if plan is None or plan.analysis is None:
        return WidenRequest(target, example_inputs, None, plan)
    origin = plan.analysis.origin
    reuse = (
        origin is not None
        and origin.model is target
        and same_inputs(origin.inputs, as_tuple(example_inputs))
        and dict(origin.options) == options_of(**options)
    )
    if reuse:
        return WidenRequest(target, example_inputs, plan.analysis, plan)
    return WidenRequest(target, example_inputs, None, plan, _note(plan, target))


def _note(plan: WidenPlan | None, model: Any) -> str:
    """What a failed check of ``plan`` adds when it was made for a model other than ``model``."""
    made = plan.analysis if plan is not None else None
    made_for = (made.origin.model if made.origin is not None else made.gm) if made else None
    if made_for is None or made_for is model:
        return ""
    other, this = _name(made_for), _name(model)
    if other == this:
        return f"(the plan was made for another {other}, not this one)"
    return f"(the plan was made for another model, a {other}, not this {this})"


def _from_analysis(
    analysis: Analysis,
    example_inputs: Any,
    plan: WidenPlan | None,
    sized: bool,
    within: str | None,
    options: Mapping[str, Any],
) -> WidenRequest:
    """``widen(analysis, ...)`` / ``widen(plan)``: the analysis's own model and inputs."""
    origin: Origin | None = getattr(analysis, "origin", None)
    if within is not None or (origin is not None and origin.within is not None):
        path = within or (origin.within if origin is not None else None)
        raise InputError(
            f"within={path!r} grows a submodule inside the whole model: pass the whole model, "
            f"fxgrow.widen(model, x, within={path!r}, plan=plan), not an Analysis or WidenPlan"
        )
    if plan is not None and sized:
        raise InputError(
            "give either plan= or widths= / factor=, not both: the plan fixes the widths"
        )
    if plan is None and not sized:
        raise InputError("give widths={group or module: new width} or factor=... to widen")
    if example_inputs is not None and not same_inputs(
        analysis.example_inputs, as_tuple(example_inputs)
    ):
        raise InputError(
            "the example inputs given differ from those the analysis was made on; an Analysis "
            "(and its WidenPlan) grows on its own inputs: leave example_inputs out, or analyse "
            "again with fxgrow.analyze(model, example_inputs)"
        )
    made_with = dict(origin.options) if origin is not None else options_of(**ANALYSIS_OPTIONS)
    defaults = options_of(**ANALYSIS_OPTIONS)
    changed = [  # a value given (not the default) that differs from the analysis's
        k for k, v in options_of(**options).items() if v != defaults[k] and v != made_with[k]
    ]
    if changed:
        raise InputError(
            f"{', '.join(f'{k}=' for k in changed)} decide how a model is analysed, and this "
            f"analysis was made with {', '.join(f'{k}={made_with[k]!r}' for k in changed)}: "
            f"pass them to fxgrow.analyze instead"
        )
    model = origin.model if origin is not None else analysis.gm
    return WidenRequest(model, analysis.example_inputs, analysis, plan, _note(plan, model))
