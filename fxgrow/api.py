"""The public functions: trace -> groups -> plan -> widen -> verify."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch
import torch.fx

from .analysis import Analysis, ChannelGroup, as_tuple
from .analysis import analyze as _analyze
from .analysis.shapes import GraphRunError
from .errors import InputError, TraceError, UnknownGroupError, UnsupportedModelError
from .frontend import export, trace
from .growth import frontend as captured_by
from .growth import update_growth_record
from .modes import set_training, untouched
from .planning import WidenPlan, check_plan, make_plan
from .rewrite import apply
from .suggest import did_you_mean
from .verify import compare
from .verify import verify as _verify
from .verify.runs import check_runs

_F = TypeVar("_F", bound=Callable[..., Any])


def leaves_teacher_untouched(fn: _F) -> _F:
    """Run ``fn(model, ...)`` inside :func:`fxgrow.modes.untouched`: whatever tracing and
    running the teacher does to its attributes, caches and buffers is undone on return."""

    @functools.wraps(fn)
    def call(model: Any, *args: Any, **kwargs: Any) -> Any:
        with untouched(model):
            return fn(model, *args, **kwargs)

    return call  # type: ignore[return-value]


def _check_inputs(model: torch.nn.Module, inputs: tuple) -> None:
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
    if within is not None:
        from .within import inner

        return inner(
            model,
            inputs,
            within,
            analyze,
            frontend=frontend,
            outputs=outputs,
            leaf_modules=leaf_modules,
            autowrap_functions=autowrap_functions,
        )
    from .hf.student import default_outputs

    outputs = default_outputs(model, outputs)
    return _on_graph(
        model,
        inputs,
        lambda gm: _analyze(gm, inputs, outputs),
        frontend=frontend,
        leaf_modules=leaf_modules,
        autowrap_functions=autowrap_functions,
    )


def _on_graph(
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
    _check_inputs(model, inputs)
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
    _model_runs(model, inputs)
    fallback = (
        frontend == "auto"
        and not isinstance(model, torch.fx.GraphModule)
        and captured_by(gm) != "export"
    )
    if not _graph_runs(gm, inputs):
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
            if not _graph_runs(gm, inputs):
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


def _model_runs(model: torch.nn.Module, inputs: tuple) -> None:
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


def _graph_runs(gm: torch.fx.GraphModule, inputs: tuple) -> bool:
    """Whether the captured graph's own ``forward`` runs on ``inputs`` (eval, no gradients)."""
    try:  # a failing GraphModule prints its generated code to stderr: keep it quiet
        with untouched(gm), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            set_training(gm, False)
            gm(*inputs)
    except Exception:
        return False
    return True


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
    """What ``widen`` would do, without doing it (a dry run)."""
    analysis = (
        model if isinstance(model, Analysis) else analyze(model, example_inputs, **trace_options)
    )
    return make_plan(analysis, widths, factor, seed, split, noise, approximate, init)


@leaves_teacher_untouched
def widen(
    model: torch.nn.Module,
    example_inputs: Any,
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
    if within is not None:
        return _within(widen, locals())
    from .rewrite.init import initialise

    if init == "gradmax" and (loss_fn is None or batch is None):
        raise InputError(
            'init="gradmax" needs loss_fn=(model, batch) -> scalar loss and '
            "batch= (what loss_fn takes)"
        )
    analysis = analyze(
        model,
        example_inputs,
        frontend=frontend,
        outputs=outputs,
        leaf_modules=leaf_modules,
        autowrap_functions=autowrap_functions,
    )
    if plan is None:
        plan = make_plan(analysis, widths, factor, seed, split, noise, approximate, init)
    elif not plan.approximate:
        check_plan(analysis, plan)
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


def _find_nodes(gm: torch.fx.GraphModule, name: str) -> list[torch.fx.Node]:
    nodes = [n for n in gm.graph.nodes if n.name == name]
    if not nodes:
        nodes = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == name]
    if not nodes:
        known = [n.name for n in gm.graph.nodes] + [
            n.target for n in gm.graph.nodes if n.op == "call_module"
        ]
        raise UnknownGroupError(
            f"no node or module named {name!r} in the graph{did_you_mean(name, known)}"
        )
    return nodes


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
    from .rewrite.block_copy import insert_blocks_after
    from .rewrite.deepen import deepen_node, node_values

    analysis = analyze(model, example_inputs, frontend=frontend, leaf_modules=leaf_modules)
    student = copy.deepcopy(analysis.gm)
    names = [after] if isinstance(after, str) else list(after)
    if not names:
        raise InputError("after= names no node or module")
    if kind == "block":
        from .analysis.blocks import find_blocks

        vals = analysis.state.vals_by_name(student)
        blocks = {b.path: b for b in find_blocks(student, vals) if b.residual}
        if any(name not in blocks for name in names):  # T5-like blocks adding I in a child
            blocks = {
                b.path: b for b in find_blocks(student, vals, nested=True) if b.residual
            } | blocks
        for name in names:
            if name not in blocks:
                from .analysis.blocks import why_not_residual

                why = why_not_residual(student, vals, name)
                raise UnknownGroupError(
                    f"no residual block named {name!r}"
                    + (f": module {name!r} runs in the graph, but {why}" if why else "")
                    + did_you_mean(
                        name,
                        blocks,
                        otherwise=f"; residual blocks: {', '.join(list(blocks)[:8]) or 'none'}",
                    )
                )
        insert_blocks_after(student, [blocks[name] for name in names])
        student.recompile()
        if verify:
            _verify(model, student, analysis.example_inputs)
        else:
            check_runs(student, analysis.example_inputs)
        return _finish(model, student, as_graph)
    targets = [n for name in names for n in _find_nodes(student, name)]
    values = node_values(student, analysis.example_inputs, [n.name for n in targets])
    teacher_nodes = {n.name: n for n in analysis.gm.graph.nodes}
    sp = analysis.state.spaces
    produced = {g.root for g in analysis.all_groups if any(m.role == "produce" for m in g.members)}
    for node in targets:
        info = analysis.state.values.get(teacher_nodes[node.name])
        axis = None
        if info is not None and getattr(info, "ndim", 0) >= 3:

            def channel(layout) -> bool:  # some space on it is written by a layer
                return any(r in produced for r in sp.roots(layout))

            has = [d for d in (1, info.ndim - 1) if channel(info.layouts[d])]
            axis = has[0] if len(has) == 1 else None
        deepen_node(
            student,
            node,
            values.get(node.name),
            axis,
            kind=kind,
            kernel_size=kernel_size,
            batchnorm=batchnorm,
            layer=layer,
            seed=seed,
        )
    student.recompile()
    if verify:
        _verify(model, student, analysis.example_inputs)
    else:
        check_runs(student, analysis.example_inputs)
    return _finish(model, student, as_graph)


@leaves_teacher_untouched
def stages(model: torch.nn.Module, example_inputs: Any, **trace_options: Any) -> list:
    """Residual stages of the model: runs of blocks that ``grow(blocks=...)`` can extend."""
    from .analysis.blocks import find_stages
    from .analysis.shapes import propagate

    inputs = as_tuple(example_inputs)
    return _on_graph(
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
    from .analysis.blocks import find_stages
    from .analysis.shapes import propagate
    from .rewrite.block_copy import grow_stage

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
            _on_graph(model, inputs, runs, frontend=frontend, leaf_modules=leaf_modules)
        )
    elif isinstance(width, Mapping):
        student = widen(
            model,
            inputs,
            widths=width,
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
    else:
        student = widen(
            model,
            inputs,
            factor=width,
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
        if not isinstance(blocks, Mapping):
            raise InputError("blocks must map a stage name to its new block count")
        vals = propagate(student, inputs)
        found = {s.name: s for s in find_stages(student, vals)}
        if any(name not in found for name in blocks):  # T5-like blocks adding I in a child
            found = {s.name: s for s in find_stages(student, vals, nested=True)} | found
        for name, count in blocks.items():
            if name not in found:
                raise UnknownGroupError(
                    f"no residual stage named {name!r}"
                    + did_you_mean(name, found, otherwise=f"; stages: {', '.join(found) or 'none'}")
                )
            if isinstance(count, bool) or not isinstance(count, int):
                raise InputError(f"block count for {name!r} must be an integer, got {count!r}")
            grow_stage(student, found[name], count)
        student.recompile()
    if verify:
        _verify(model, student, inputs)
    else:
        check_runs(student, inputs)
    return _finish(model, student, as_graph)
