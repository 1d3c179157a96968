"""Growing one submodule in place (``within="backbone"``).

A model that cannot be captured whole (a detector's data-dependent proposals) can still grow
a submodule that can: its inputs are recorded by a forward pre-hook during one eval-mode
forward of the whole model on the example inputs, the submodule is captured and grown on those
inputs with its outputs fixed (they feed the rest of the model, which is not rewritten), and
the grown GraphModule is put into a copy of the whole model.  Invariant: the student is the
teacher's class, holds the teacher's other modules' values, and computes the teacher's function
(the submodule's outputs are verified by the calibrated verifier, the whole model's by
:mod:`fxgrow.within.detections`).  The teacher is never modified."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..errors import InputError, UnknownGroupError, UnsupportedModelError
from ..growth import update_growth_record
from ..modes import set_training, untouched
from ..suggest import did_you_mean


@dataclass(frozen=True)
class Call:
    """The submodule at ``path`` and the positional inputs (in ``forward``'s order) it was
    called with during one forward of the whole model."""

    path: str
    module: torch.nn.Module
    inputs: tuple


def submodule(model: torch.nn.Module, path: Any) -> torch.nn.Module:
    """The submodule at the dotted ``path``; an :class:`UnknownGroupError` with the closest
    names when there is none."""
    if not isinstance(path, str):
        raise InputError(
            f"within= must be a dotted submodule path such as 'backbone', got {type(path).__name__}"
        )
    if path == "":
        raise InputError(
            "within='' names the model itself; leave within= out to grow the whole model"
        )
    modules = dict(model.named_modules())
    if path not in modules:
        hint = did_you_mean(
            path,
            modules,
            otherwise=f"; its children: {', '.join(n for n, _ in model.named_children()) or 'none'}",
        )
        raise UnknownGroupError(
            f"within={path!r}: {type(model).__name__} has no submodule {path!r}{hint}"
        )
    return modules[path]


def _positional(module: torch.nn.Module, path: str, args: tuple, kwargs: dict) -> tuple:
    """``args`` and ``kwargs`` as positional inputs in the order of ``module.forward``'s
    parameters (skipped ones take their defaults); every one must be a tensor."""
    try:
        sig = inspect.signature(module.forward)
        bound = sig.bind(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise UnsupportedModelError(
            f"within={path!r}: the call's inputs do not bind to "
            f"{type(module).__name__}.forward: {e}"
        ) from e
    names = list(bound.arguments)
    params = list(sig.parameters.values())
    last = max((i for i, p in enumerate(params) if p.name in names), default=-1)
    inputs: list[tuple[str, Any]] = []
    for p in params[: last + 1]:
        if p.kind is p.VAR_POSITIONAL:
            inputs += [
                (f"*{p.name}[{i}]", v) for i, v in enumerate(bound.arguments.get(p.name, ()))
            ]
        elif p.kind is p.VAR_KEYWORD:
            if bound.arguments.get(p.name):
                raise UnsupportedModelError(
                    f"within={path!r}: {type(module).__name__} is called with keyword inputs "
                    f"{sorted(bound.arguments[p.name])} that its forward takes as **{p.name}; "
                    f"fxgrow captures named parameters only"
                )
        else:
            inputs.append((p.name, bound.arguments.get(p.name, p.default)))
    for name, value in inputs:
        if not isinstance(value, torch.Tensor):
            what = (
                "nothing (its default)"
                if value is inspect.Parameter.empty
                else f"a {type(value).__name__}"
            )
            raise InputError(
                f"within={path!r}: input {name!r} of {type(module).__name__}.forward is {what}, "
                f"not a tensor; fxgrow grows a submodule whose inputs are tensors. Name the "
                f"submodule that produces it, or one that contains both"
            )
    return tuple(v for _, v in inputs)


def record_call(model: torch.nn.Module, path: str, example_inputs: tuple) -> Call:
    """Run ``model`` once (eval mode, no gradients; the model is left as it was) and record
    the inputs of the submodule at ``path``, which must be called exactly once."""
    module = submodule(model, path)
    calls: list[tuple[tuple, dict]] = []

    def hook(_: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append((args, dict(kwargs)))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with untouched(model), torch.no_grad():
            set_training(model, False)
            model(*example_inputs)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise InputError(
            f"the model does not run on the example inputs: "
            f"{type(e).__name__}: {first}. Pass inputs the whole model takes "
            f"(within= records {path!r}'s inputs from that run)"
        ) from e
    finally:
        handle.remove()
    if not calls:
        raise InputError(
            f"within={path!r}: {type(model).__name__}.forward never calls "
            f"{path!r} ({type(module).__name__}) on the example inputs; name a "
            f"submodule the forward calls once"
        )
    if len(calls) > 1:
        raise UnsupportedModelError(
            f"within={path!r}: {type(model).__name__}.forward calls {path!r} "
            f"({type(module).__name__}) {len(calls)} times; fxgrow grows a submodule called "
            f"once (each call would need its own fixed inputs and outputs). Name a submodule "
            f"called once"
        )
    args, kwargs = calls[0]
    return Call(path, module, _positional(module, path, args, kwargs))


def _check_not_shared(model: torch.nn.Module, call: Call) -> None:
    inside = {id(t) for t in (*call.module.parameters(), *call.module.buffers())}
    for name, t in (
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ):
        if id(t) in inside and not (name == call.path or name.startswith(call.path + ".")):
            raise UnsupportedModelError(
                f"within={call.path!r}: {name!r} outside {call.path!r} is the same tensor as one "
                f"inside it; growing {call.path!r} alone would untie them. Name a submodule "
                f"that contains both"
            )


_PLAIN = (bool, int, float, str, type(None))


def rebuild(model: torch.nn.Module, call: Call, grown: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with ``grown`` in place of the submodule at ``call.path`` (the
    teacher's submodule is not copied).  Plain attributes of the submodule (a backbone's
    ``out_channels``) are kept on ``grown`` where it has none of its own."""
    _check_not_shared(model, call)
    for key, value in vars(call.module).items():
        if (
            not key.startswith("_")
            and key != "training"
            and not hasattr(grown, key)
            and (
                isinstance(value, _PLAIN)
                or isinstance(value, (tuple, list))
                and all(isinstance(v, _PLAIN) for v in value)
            )
        ):
            setattr(grown, key, copy.copy(value))
    grown.training = call.module.training
    return copy.deepcopy(model, memo={id(call.module): grown})


def grow_within(
    model: torch.nn.Module,
    example_inputs: tuple,
    path: str,
    grow: Callable[..., torch.nn.Module],
    *,
    verify: bool = True,
    **options: Any,
) -> torch.nn.Module:
    """``grow(submodule, its_inputs, as_graph=True, verify=verify, **options)`` (fxgrow's
    widen, grow or deepen), put into a copy of ``model``.  With ``verify``, the whole model's
    outputs are checked too; the figures are in the growth record of
    ``student.get_submodule(path)`` (``error``: the submodule's, ``whole``: the whole model's)."""
    from .detections import verify_whole

    if options.pop("as_graph", False):
        raise InputError(
            "as_graph=True and within= do not go together: within= returns the "
            "teacher's class with the grown submodule (a GraphModule) inside"
        )
    call = record_call(model, path, example_inputs)
    # as_graph=True: grow returns the graph itself
    grown = cast(
        torch.fx.GraphModule,
        grow(call.module, call.inputs, as_graph=True, verify=verify, **options),
    )
    student = rebuild(model, call, grown)
    if verify:
        update_growth_record(grown, whole=verify_whole(model, student, example_inputs))
    return student


def inner(
    model: torch.nn.Module, example_inputs: tuple, path: str, fn: Callable[..., Any], **options: Any
) -> Any:
    """``fn(submodule, its_inputs, **options)``: fxgrow's analyze, groups or plan on the
    submodule at ``path``."""
    call = record_call(model, path, example_inputs)
    return fn(call.module, call.inputs, **options)
