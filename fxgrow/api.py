"""The public functions: trace -> groups -> plan -> widen -> verify."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
import torch.fx

from .analysis import Analysis, ChannelGroup, as_tuple
from .analysis import analyze as _analyze
from .errors import InputError
from .frontend import trace
from .plan import WidenPlan, make_plan
from .rewrite import apply
from .verify import verify as _verify


def _check_inputs(model: torch.nn.Module, inputs: tuple) -> None:
    params = [p for p in model.parameters()]
    if not params:
        return
    device = params[0].device
    for i, x in enumerate(inputs):
        if isinstance(x, torch.Tensor) and x.device != device and device.type != "meta":
            raise InputError(f"example input {i} is on {x.device} but the model's parameters "
                             f"are on {device}; move one to the other")


def analyze(model: torch.nn.Module, example_inputs: Any, *,
            leaf_modules: Iterable[type | str] = (),
            autowrap_functions: Iterable[Callable] = ()) -> Analysis:
    """Trace ``model`` and find its channel groups on ``example_inputs``."""
    inputs = as_tuple(example_inputs)
    _check_inputs(model, inputs)
    gm = trace(model, leaf_modules=leaf_modules, autowrap_functions=autowrap_functions)
    return _analyze(gm, inputs)


def groups(model: torch.nn.Module, example_inputs: Any, **trace_options: Any) -> list[ChannelGroup]:
    """The channel groups of ``model``: spaces that must share one replication map."""
    return analyze(model, example_inputs, **trace_options).groups


def plan(model: torch.nn.Module | Analysis, example_inputs: Any = None, *,
         widths: Mapping[str, int] | None = None, factor: float | None = None, seed: int = 0,
         **trace_options: Any) -> WidenPlan:
    """What ``widen`` would do, without doing it (a dry run)."""
    analysis = model if isinstance(model, Analysis) else \
        analyze(model, example_inputs, **trace_options)
    return make_plan(analysis, widths, factor, seed)


def widen(model: torch.nn.Module, example_inputs: Any, *,
          widths: Mapping[str, int] | None = None, factor: float | None = None, seed: int = 0,
          verify: bool = True, plan: WidenPlan | None = None,
          leaf_modules: Iterable[type | str] = (),
          autowrap_functions: Iterable[Callable] = ()) -> torch.fx.GraphModule:
    """Net2WiderNet on every group named in ``widths`` (group or module name -> new width) or,
    with ``factor``, on every widenable group.  Returns a new GraphModule (the teacher is not
    modified); with ``verify`` (default) it is checked against the teacher on the inputs."""
    analysis = analyze(model, example_inputs, leaf_modules=leaf_modules,
                       autowrap_functions=autowrap_functions)
    if plan is None:
        plan = make_plan(analysis, widths, factor, seed)
    student = apply(analysis, plan)
    if verify:
        _verify(model, student, analysis.example_inputs)
    return student
