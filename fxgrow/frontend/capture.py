"""Capturing a model as a GraphModule: fx symbolic tracing, torch.export where fx fails, and
when the captured graph does not run on the example inputs, finding whose fault that is.

Invariant: the teacher is left as it was (``untouched``); a graph that cannot be followed ends
in a :class:`TraceError`, :class:`InputError` (the model itself does not run on the inputs) or
:class:`UnsupportedModelError` naming the failing node, never a raw exception."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx

from ..analysis.shapes import GraphRunError
from ..errors import InputError, TraceError, UnsupportedModelError
from ..growth import frontend as captured_by
from ..modes import set_training, untouched
from .export import export
from .tracer import trace


def check_inputs(model: torch.nn.Module, inputs: tuple) -> None:
    """Refuse what cannot be captured before trying: a model that is not an ``nn.Module``,
    an example input on another device than the model's parameters."""
    if not isinstance(model, torch.nn.Module):
        raise TraceError(
            f"expected a torch.nn.Module, got {type(model).__name__}; wrap a "
            f"function in an nn.Module whose forward calls it"
        )
    params = [p for p in model.parameters()]
    if not params:
        return
    device = params[0].device
    for i, x in enumerate(inputs):
        if isinstance(x, torch.Tensor) and x.device != device and device.type != "meta":
            raise InputError(
                f"example input {i} is on {x.device} but the model's parameters "
                f"are on {device}; move one to the other"
            )


def capture(
    model: torch.nn.Module,
    example_inputs: tuple,
    *,
    frontend: str = "auto",
    leaf_modules: Iterable[type | str] = (),
    autowrap_functions: Iterable[Callable] = (),
) -> torch.fx.GraphModule:
    """The model as a GraphModule: fx symbolic tracing, or torch.export where fx fails
    (``frontend="auto"``), or the one named ("fx" / "export")."""
    if frontend not in ("auto", "fx", "export"):
        raise InputError(f"frontend must be 'auto', 'fx' or 'export', got {frontend!r}")
    if isinstance(model, torch.fx.GraphModule) or frontend == "fx":
        with untouched(model):
            return trace(
                model,
                leaf_modules=leaf_modules,
                autowrap_functions=autowrap_functions,
                example_inputs=example_inputs,
            )
    if frontend == "export":
        with untouched(model):
            return export(model, example_inputs)
    try:
        with untouched(model):
            return trace(
                model,
                leaf_modules=leaf_modules,
                autowrap_functions=autowrap_functions,
                example_inputs=example_inputs,
            )
    except TraceError as fx_error:
        try:
            with untouched(model):
                return export(model, example_inputs)
        except TraceError as export_error:
            raise TraceError(f"{fx_error}\nThen: {export_error}") from export_error


def on_graph(
    model: torch.nn.Module,
    inputs: tuple,
    use: Callable[[torch.fx.GraphModule], Any],
    *,
    frontend: str = "auto",
    leaf_modules: Iterable[type | str] = (),
    autowrap_functions: Iterable[Callable] = (),
) -> Any:
    """``use(gm)`` on the captured graph; where the graph does not run on ``inputs``
    (:class:`GraphRunError` from ``use``), find whose fault it is and fall back to
    torch.export when fx's graph is (``frontend="auto"``)."""
    check_inputs(model, inputs)
    gm = capture(
        model,
        inputs,
        frontend=frontend,
        leaf_modules=leaf_modules,
        autowrap_functions=autowrap_functions,
    )
    try:
        return use(gm)
    except GraphRunError as failure:
        fx_failure = failure
    # The captured graph does not run on the inputs: the inputs' fault (the model does not run
    # either), the front end's (the model runs, its graph does not), or fxgrow's own.
    model_runs(model, inputs)
    fallback = (
        frontend == "auto"
        and not isinstance(model, torch.fx.GraphModule)
        and captured_by(gm) != "export"
    )
    if not graph_runs(gm, inputs):
        front = "torch.export" if captured_by(gm) == "export" else "torch.fx"
        if not fallback:
            raise TraceError(
                f"the graph {front} captured from {type(model).__name__} does not run on the "
                f"example inputs although the model does: {fx_failure}. Pass "
                f"leaf_modules=[...] naming the module around that node, or try "
                f"frontend='export'."
            ) from fx_failure
        try:
            with untouched(model):
                gm = export(model, inputs)
        except TraceError as export_error:
            raise TraceError(
                f"the graph torch.fx captured from {type(model).__name__} does not run on the "
                f"example inputs although the model does ({fx_failure}); then {export_error}"
            ) from fx_failure
        try:
            return use(gm)
        except GraphRunError as failure:
            if not graph_runs(gm, inputs):
                raise TraceError(
                    f"neither torch.fx nor torch.export captured a graph of "
                    f"{type(model).__name__} that runs on the example inputs, although the "
                    f"model does: fx's fails at {fx_failure}; export's at {failure}. Pass "
                    f"leaf_modules=[...] naming the module around the fx node."
                ) from failure
            fx_failure = failure
    raise UnsupportedModelError(
        f"fxgrow could not follow {type(model).__name__}'s graph node by node, though the model "
        f"and its graph run on these inputs: {fx_failure}. This is a limitation of fxgrow's "
        f"shape propagation, not a problem with the inputs; please report it (passing "
        f"leaf_modules=[...] naming the module around that node may avoid it)."
    ) from fx_failure


def model_runs(model: torch.nn.Module, inputs: tuple) -> None:
    """Raise :class:`InputError` if ``model`` itself does not run on ``inputs`` (eval mode,
    no gradients; the model is left as it was)."""
    try:
        with untouched(model), torch.no_grad():
            set_training(model, False)
            model(*inputs)
    except Exception as e:
        shapes = ", ".join(
            str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__ for x in inputs
        )
        first = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else ""
        raise InputError(
            f"the model does not run on the example inputs ({shapes}): "
            f"{type(e).__name__}: {first}. Pass inputs of the shape, dtype and "
            f"device the model expects, and the number its forward takes."
        ) from e


def graph_runs(gm: torch.fx.GraphModule, inputs: tuple) -> bool:
    """Whether the captured graph's own ``forward`` runs on ``inputs`` (eval, no gradients)."""
    try:  # a failing GraphModule prints its generated code to stderr: keep it quiet
        with untouched(gm), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            set_training(gm, False)
            gm(*inputs)
    except Exception:
        return False
    return True
