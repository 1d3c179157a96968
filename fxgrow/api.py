"""The public functions: trace -> groups -> plan -> widen -> verify.

Each is thin: capture and its fallbacks live in ``frontend/capture.py``, what ``widen`` is asked
to grow (a model, an Analysis or a WidenPlan) in ``planning/request.py``, the depth rewrites in
``rewrite/deepening.py``; every call leaves the teacher as it was."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch
import torch.fx

from .analysis import Analysis, ChannelGroup, as_tuple
from .analysis import analyze as _analyze
from .errors import InputError
from .frontend.capture import capture, on_graph
from .growth import update_growth_record
from .modes import untouched
from .planning import WidenPlan, check_plan, make_plan
from .planning.request import Origin, WidenRequest, options_of, widen_request
from .rewrite import apply
from .verify import compare
from .verify import verify as _verify
from .verify.runs import check_runs

__all__ = ["analyze", "as_tuple", "capture", "deepen", "groups", "grow", "plan", "stages", "widen"]

_F = TypeVar("_F", bound=Callable[..., Any])


def leaves_teacher_untouched(fn: _F) -> _F:
    """Run ``fn(model, ...)`` inside :func:`fxgrow.modes.untouched`: whatever tracing and
    running the teacher does to its attributes, caches and buffers is undone on return."""

    @functools.wraps(fn)
    def call(model: Any, *args: Any, **kwargs: Any) -> Any:
        with untouched(model):
            return fn(model, *args, **kwargs)

    return call  # type: ignore[return-value]


@leaves_teacher_untouched
def analyze(
    model: torch.nn.Module,
    example_inputs: Any,
    *,
    frontend: str = "auto",
    outputs: str = "fixed",
    leaf_modules: Iterable[type | str] = (),
    autowrap_functions: Iterable[Callable] = (),
    within: str | None = None,
) -> Analysis:
    """Capture ``model`` as a graph and find its channel groups on ``example_inputs``.

    ``outputs="fixed"`` (default) keeps every output's shape; ``"grow"`` lets channel axes of
    outputs widen (encoders whose output is a hidden state), and the teacher's outputs are then
    compared with the student's at the positions the replication maps keep.

    ``within="backbone"``: the analysis of that submodule, captured on the inputs it gets
    during one forward of ``model`` (``fxgrow.within``); ``groups`` and ``plan`` take it too."""
    inputs = as_tuple(example_inputs)
    options = options_of(
        frontend=frontend,
        outputs=outputs,
        leaf_modules=leaf_modules,
        autowrap_functions=autowrap_functions,
    )
    if within is not None:
        from .within import inner

        analysis = inner(model, inputs, within, analyze, **options)
        analysis.origin = dataclasses.replace(analysis.origin, within=within)
        return analysis
    from .hf.student import default_outputs

    grown = default_outputs(model, outputs)
    analysis = on_graph(
        model,
        inputs,
        lambda gm: _analyze(gm, inputs, grown),
        frontend=frontend,
        leaf_modules=leaf_modules,
        autowrap_functions=autowrap_functions,
    )
    analysis.origin = Origin(model, inputs, options)
    return analysis


@leaves_teacher_untouched
def groups(model: torch.nn.Module, example_inputs: Any, **trace_options: Any) -> list[ChannelGroup]:
    """The channel groups of ``model``: spaces that must share one replication map."""
    return analyze(model, example_inputs, **trace_options).groups


@leaves_teacher_untouched
def plan(
    model: torch.nn.Module | Analysis,
    example_inputs: Any = None,
    *,
    widths: Mapping[str, int] | None = None,
    factor: float | None = None,
    seed: int = 0,
    split: str = "equal",
    noise: float = 0.0,
    approximate: bool = False,
    init: str = "replicate",
    **trace_options: Any,
) -> WidenPlan:
    """What ``widen`` would do, without doing it (a dry run).  The plan keeps the analysis it
    was made from (``plan.analysis``), so ``widen(plan)`` grows without analysing again."""
    analysis = (
        model if isinstance(model, Analysis) else analyze(model, example_inputs, **trace_options)
    )
    made = make_plan(analysis, widths, factor, seed, split, noise, approximate, init)
    return dataclasses.replace(made, analysis=analysis)


def widen(
    model: torch.nn.Module | Analysis | WidenPlan,
    example_inputs: Any = None,
    *,
    widths: Mapping[str, int] | None = None,
    factor: float | None = None,
    seed: int = 0,
    split: str = "equal",
    noise: float = 0.0,
    approximate: bool = False,
    verify: bool = True,
    plan: WidenPlan | None = None,
    frontend: str = "auto",
    outputs: str = "fixed",
    untie: bool = False,
    as_graph: bool = False,
    leaf_modules: Iterable[type | str] = (),
    autowrap_functions: Iterable[Callable] = (),
    init: str = "replicate",
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    batch: Any = None,
    within: str | None = None,
) -> torch.nn.Module:
    """Net2WiderNet on every group named in ``widths`` (group or module name -> new width) or,
    with ``factor``, on every widenable group.  Returns a new GraphModule (the teacher is not
    modified); with ``verify`` (default) it is checked against the teacher on the inputs.

    What to widen: ``widen(model, x, factor=2)``; an analysis already made,
    ``widen(fxgrow.analyze(model, x), factor=2)``; or a plan, ``widen(fxgrow.plan(a, ...))``
    or ``widen(model, x, plan=p)``.  An analysis or a plan from ``fxgrow.plan`` is not made
    again; a plan read from JSON is checked against the model's analysis, and one made for
    another model is refused (:class:`InputError`).

    Tied weights (an embedding reused as the output projection) stay tied and exact: the
    projection's input is divided by the replication counts; ``untie=True`` gives the
    projection its own divided copy instead.  ``outputs="grow"`` lets output channel axes
    widen (see ``analyze``).  A Hugging Face teacher gives an instance of its own class
    built from the grown config (``fxgrow.hf``), unless ``as_graph=True``.

    ``init``: ``"replicate"`` (Net2Net); ``"zero"``: new units get a fresh random fan-in and a
    zero fan-out wherever that is exact (groups normalised over the channel replicate:
    ``plan.changes[i].init`` says which); ``"gradmax"``: as "zero", the fan-in chosen to
    maximise the fan-out's gradient norm for ``loss_fn(model, batch) -> loss``.

    ``within="backbone"``: grow only that submodule, its inputs and outputs fixed, and return
    a copy of ``model`` (its class) with the grown GraphModule in its place, the submodule's
    and the whole model's outputs verified (``fxgrow.within``; ``deepen`` and ``grow`` too)."""
    if within is not None and isinstance(model, torch.nn.Module):
        with untouched(model):
            return _within(widen, locals())
    options: dict[str, Any] = dict(
        frontend=frontend,
        outputs=outputs,
        leaf_modules=leaf_modules,
        autowrap_functions=autowrap_functions,
    )
    sized = widths is not None or factor is not None
    request = widen_request(
        model, example_inputs, plan, sized=sized, within=within, options=options
    )
    if (init if request.plan is None else request.plan.init) == "gradmax" and (
        loss_fn is None or batch is None
    ):
        raise InputError(
            'init="gradmax" needs loss_fn=(model, batch) -> scalar loss and '
            "batch= (what loss_fn takes)"
        )
    with untouched(request.model):
        analysis = request.analysis
        if analysis is None:
            analysis = analyze(request.model, request.inputs, **options)
        grown = _plan_for(request, analysis, widths, factor, seed, split, noise, approximate, init)
        return _widened(request.model, analysis, grown, verify, untie, as_graph, loss_fn, batch)


def _plan_for(request: WidenRequest, analysis: Analysis, *made_with: Any) -> WidenPlan:
    """The request's plan checked against ``analysis`` (a failure names the model the plan
    was made for), or a new plan from ``made_with`` (make_plan's arguments)."""
    if request.plan is None:
        return make_plan(analysis, *made_with)
    if not request.plan.approximate:
        try:
            check_plan(analysis, request.plan)
        except InputError as e:
            if not request.note:
                raise
            raise type(e)(f"{e} {request.note}") from e
    return request.plan


def _widened(
    model: Any,
    analysis: Analysis,
    plan: WidenPlan,
    verify: bool,
    untie: bool,
    as_graph: bool,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor] | None,
    batch: Any,
) -> torch.nn.Module:
    """Rewrite, initialise the new units, verify (or measure, for a plan inexact by design)."""
    from .rewrite.init import initialise

    student = apply(analysis, plan, untie=untie)
    initialise(analysis, plan, student, loss_fn, batch)
    if plan.noise or plan.approximate:  # not exact by design: measure and report
        error = compare(model, student, analysis.example_inputs)
        update_growth_record(student, error=error, inexact=True)
    elif verify:
        update_growth_record(student, error=_verify(model, student, analysis.example_inputs))
    else:  # never return a student that does not run: one cheap run on meta tensors
        check_runs(student, analysis.example_inputs)
    return _finish(model, student, as_graph)


def _within(fn: Callable[..., torch.nn.Module], args: dict) -> torch.nn.Module:
    """``fn`` (widen, deepen, grow) called with ``args`` (its own parameters) on the
    submodule ``args["within"]`` of ``args["model"]`` (``fxgrow.within``)."""
    from .within import grow_within

    options = {k: v for k, v in args.items() if k not in ("model", "example_inputs", "within")}
    return grow_within(
        args["model"], as_tuple(args["example_inputs"]), args["within"], fn, **options
    )


def _finish(
    model: torch.nn.Module, student: torch.fx.GraphModule, as_graph: bool
) -> torch.nn.Module:
    from .hf.student import finish

    return finish(model, student, as_graph)


def _checked(model: torch.nn.Module, student: torch.fx.GraphModule, inputs: tuple, verify: bool):
    """``student`` verified against ``model`` (or, without ``verify``, run once on meta)."""
    if verify:
        _verify(model, student, inputs)
    else:
        check_runs(student, inputs)
    return student


@leaves_teacher_untouched
def deepen(
    model: torch.nn.Module,
    example_inputs: Any,
    *,
    after: str | Iterable[str],
    kind: str = "identity",
    kernel_size: int = 3,
    batchnorm: bool = False,
    layer: str | None = None,
    seed: int = 0,
    verify: bool = True,
    frontend: str = "auto",
    as_graph: bool = False,
    leaf_modules: Iterable[type | str] = (),
    within: str | None = None,
) -> torch.nn.Module:
    """Net2DeeperNet: insert layers after the named nodes or modules.

    ``kind="identity"``: an identity Linear (``[..., C]``) or k x k conv (``[N, C, ...]``),
    optionally an identity BatchNorm (``batchnorm=True``; exact in eval mode only: in training
    mode it normalises with batch statistics), and a copy of the node's activation if the node
    is one -- refused unless that activation is idempotent (ReLU yes, GELU/SiLU no).
    ``kind="residual"``: ``h + f(h)`` with f's last layer zero, exact for any activation.
    ``kind="block"``: ``after`` names residual blocks (``layer1.0``, ``model.layers.3``); a
    copy of each, with the last layer of every residual branch zeroed, runs right after it,
    all in one call (LLaMA-Pro's interleaved expansion); pre-norm, sandwich-norm and
    parallel-residual transformer blocks, T5 blocks and ResNet blocks; post-norm blocks are
    refused."""
    if within is not None:
        return _within(deepen, locals())
    from .rewrite.deepening import deepened

    analysis = analyze(model, example_inputs, frontend=frontend, leaf_modules=leaf_modules)
    student = deepened(
        analysis,
        after,
        kind=kind,
        kernel_size=kernel_size,
        batchnorm=batchnorm,
        layer=layer,
        seed=seed,
    )
    return _finish(model, _checked(model, student, analysis.example_inputs, verify), as_graph)


@leaves_teacher_untouched
def stages(model: torch.nn.Module, example_inputs: Any, **trace_options: Any) -> list:
    """Residual stages of the model: runs of blocks that ``grow(blocks=...)`` can extend."""
    from .analysis.blocks import find_stages
    from .analysis.shapes import propagate

    inputs = as_tuple(example_inputs)
    return on_graph(
        model, inputs, lambda gm: find_stages(gm, propagate(gm, inputs)), **trace_options
    )


@leaves_teacher_untouched
def grow(
    model: torch.nn.Module,
    example_inputs: Any,
    *,
    blocks: Mapping[str, int] | None = None,
    width: float | Mapping[str, int] | None = None,
    seed: int = 0,
    verify: bool = True,
    split: str = "equal",
    frontend: str = "auto",
    untie: bool = False,
    as_graph: bool = False,
    to_config: Any = None,
    leaf_modules: Iterable[type | str] = (),
    init: str = "replicate",
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    batch: Any = None,
    within: str | None = None,
) -> torch.nn.Module:
    """Widen (``width``: a factor, or {group or module: width}; ``init`` as in ``widen``) and
    deepen (``blocks``: {stage: new block count}) in one call, then verify against the teacher.

    ``to_config`` (a Hugging Face teacher): a config or {field: value} to reach exactly; the
    widths and blocks are found from it (``fxgrow.hf.target``)."""
    if within is not None:
        return _within(grow, locals())
    import copy

    from .analysis.shapes import propagate
    from .rewrite.deepening import grow_stages

    inputs = as_tuple(example_inputs)
    if to_config is not None:
        from .hf.target import grow_to_config

        return grow_to_config(
            model,
            inputs,
            to_config,
            seed=seed,
            split=split,
            untie=untie,
            verify=verify,
            as_graph=as_graph,
        )
    if width is None:

        def runs(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
            propagate(gm, inputs)  # a graph that does not run: whose fault (see analyze)
            return gm

        student = copy.deepcopy(
            on_graph(model, inputs, runs, frontend=frontend, leaf_modules=leaf_modules)
        )
    else:
        by_name = isinstance(width, Mapping)
        student = widen(
            model,
            inputs,
            widths=width if by_name else None,  # type: ignore[arg-type]
            factor=None if by_name else width,  # type: ignore[arg-type]
            seed=seed,
            split=split,
            verify=False,
            frontend=frontend,
            leaf_modules=leaf_modules,
            untie=untie,
            as_graph=True,
            init=init,
            loss_fn=loss_fn,
            batch=batch,
        )
    if blocks:
        grow_stages(student, inputs, blocks)
    return _finish(model, _checked(model, student, inputs, verify), as_graph)
