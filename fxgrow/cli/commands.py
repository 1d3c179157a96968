"""The command line's commands: ``inspect``, ``widen``, ``deepen``, ``grow`` and ``draw``, each ``cmd_X(args, ui) -> exit status`` built from the shared steps (cli_steps)."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from .console import UI, _new_modules, _report, table
from .models import Loaded, SpecError, _count_params, _describe_inputs, _short
from .steps import (
    _analyse,
    _apply,
    _assignments,
    _budget,
    _check_factor,
    _check_output,
    _deepen_budget,
    _frontend,
    _load,
    _plan,
    _save,
    _trace_options,
    _verify,
)
from .within import check_whole, narrow

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


def cmd_inspect(args: argparse.Namespace, ui: UI) -> int:
    """``fxgrow inspect``: the model's channel groups and residual stages, as a table or JSON."""
    loaded, _ = narrow(_load(args, ui), args, ui)
    analysis = _analyse(loaded, args, ui, outputs=args.outputs)
    groups = analysis.all_groups if args.all else analysis.groups
    stages = []
    with contextlib.suppress(Exception):
        from ..analysis.blocks import find_stages
        from ..analysis.shapes import propagate

        stages = find_stages(analysis.gm, propagate(analysis.gm, analysis.example_inputs))
    if args.json:
        doc = {
            "model": loaded.label,
            "class": type(loaded.model).__name__,
            "parameters": _count_params(loaded.model),
            "inputs": [list(x.shape) for x in loaded.inputs],
            "frontend": _frontend(analysis.gm),
            "groups": [
                {
                    "name": g.name,
                    "width": g.width,
                    "unit": g.unit,
                    "members": len(g.members),
                    "widenable": g.widenable,
                    "modules": list(g.modules),
                    "blockers": [
                        {"node": b.node, "reason": b.reason, "kind": b.kind} for b in g.blockers
                    ],
                }
                for g in groups
            ],
            "stages": [{"name": s.name, "blocks": [b.path for b in s.blocks]} for s in stages],
        }
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    print(
        f"{loaded.label}: {type(loaded.model).__name__}, {_count_params(loaded.model):,} "
        f"parameters, input {_describe_inputs(loaded.inputs)}, "
        f"{_frontend(analysis.gm)} graph of "
        f"{len(analysis.gm.graph.nodes)} nodes\n"
    )
    rows = []
    for g in groups:
        if g.widenable:
            status = "widenable"
        elif g.fixed:
            kinds = dict.fromkeys(b.label for b in g.blockers)
            status = "fixed: model " + " and ".join(kinds)
        else:
            b = next(b for b in g.blockers if b.kind not in ("boundary", "structure"))
            more = len([x for x in g.blockers if x.kind not in ("boundary", "structure")]) - 1
            status = _short(
                f"blocked by {b}" + (f" (+{more} more)" if more > 0 else ""), args.width_limit
            )
        unit = f"{g.unit}x{g.multiplicity}" if g.multiplicity > 1 else ""
        rows.append([g.name, g.width, unit, len(g.members), status])
    print(table(["group", "width", "unit", "members", "widenable / blockers"], rows, "lrrrl"))
    blocked = sum(1 for g in groups if not g.widenable and not g.fixed)
    print(
        f"\n{len(groups)} groups: {sum(g.widenable for g in groups)} widenable, "
        f"{sum(1 for g in groups if g.fixed)} fixed by the model's inputs/outputs, "
        f"{blocked} blocked"
    )
    if stages:
        print("\nresidual stages (fxgrow grow --blocks STAGE=N):")
        print(
            table(
                ["stage", "blocks", "block paths"],
                [
                    [s.name, s.count, _short(", ".join(b.path for b in s.blocks), 60)]
                    for s in stages
                ],
                "lrl",
            )
        )
    if args.rank:
        from .growth import print_rank

        print_rank(loaded, args)
    return EXIT_OK


def cmd_widen(args: argparse.Namespace, ui: UI) -> int:
    """``fxgrow widen``: widen channel groups, verify the student against the teacher, save it."""
    _check_factor(args)
    _check_output(args, (".safetensors",))
    whole = _load(args, ui)
    loaded, call = narrow(whole, args, ui)
    analysis, plan = _plan(loaded, args, ui)
    _budget(analysis, plan, args, ui)
    if args.plan_only:
        print(plan.to_json() if args.json else plan)
        return EXIT_OK
    student = _apply(analysis, plan, ui)
    result, tol, ok = _verify(loaded, student, args, ui)
    check_whole(whole, call, student, args, ui)
    saved = _save(student, loaded, args, ui)
    _report(loaded, student, result, tol, ok, saved, list(plan.changes), [], args, analysis.gm)
    return EXIT_OK


def _after_names(items: list[str]) -> list[str]:
    return [p.strip() for item in items for p in item.split(",") if p.strip()]


def cmd_deepen(args: argparse.Namespace, ui: UI) -> int:
    """``fxgrow deepen``: insert identity layers after named modules, verify, save."""
    from ..api import capture, deepen

    _check_output(args, (".safetensors",))
    loaded = _load(args, ui)
    after = _after_names(args.after)
    options = dict(
        after=after,
        kind=args.kind,
        kernel_size=args.kernel_size,
        batchnorm=args.batchnorm,
        layer=args.layer,
        seed=args.seed,
        verify=False,
        as_graph=True,
        **_trace_options(args),
    )
    _deepen_budget(loaded, args, ui, options)
    with ui.step(f"inserting {args.kind} layers after {', '.join(after)}") as s:
        student = deepen(loaded.model, loaded.inputs, **options)
        s["done"] = f"{_count_params(student):,} parameters"
    teacher_gm = capture(loaded.model, loaded.inputs, **_trace_options(args))
    result, tol, ok = _verify(loaded, student, args, ui)
    saved = _save(student, loaded, args, ui)
    _report(
        loaded,
        student,
        result,
        tol,
        ok,
        saved,
        [],
        _new_modules(teacher_gm, student),
        args,
        teacher_gm,
    )
    return EXIT_OK


def _grow(loaded: Loaded, args: argparse.Namespace, ui: UI):
    """(teacher graph, plan changes, student) for --blocks and --factor/--width; the planned
    size is printed and checked before anything is built."""
    from ..api import grow, stages

    blocks = _assignments(args.blocks, "--blocks", "layer1=3")
    widths = _assignments(args.width, "--width", "layer1.0.conv1=96")
    if not blocks and args.factor is None and not widths:
        raise SpecError(
            "say how to grow: --blocks STAGE=N (new block count) and/or --factor F "
            "/ --width GROUP=N"
        )
    plan = None
    if args.factor is not None or widths:
        analysis, plan = _plan(loaded, args, ui)
    else:
        from types import SimpleNamespace

        from ..api import capture

        with ui.step("tracing") as s:
            gm = capture(loaded.model, loaded.inputs, **_trace_options(args))
            s["done"] = f"{len(gm.graph.nodes)} nodes"
        analysis = SimpleNamespace(gm=gm, all_groups=[])
    found = stages(analysis.gm, loaded.inputs) if blocks else []
    _budget(analysis, plan, args, ui, found, blocks)
    teacher_gm, changes = analysis.gm, list(plan.changes) if plan is not None else []
    student = _apply(analysis, plan, ui) if plan is not None else teacher_gm
    if blocks:
        with ui.step(f"growing stages {', '.join(f'{k} to {v}' for k, v in blocks.items())}") as s:
            student = grow(student, loaded.inputs, blocks=blocks, seed=args.seed, verify=False)
            s["done"] = f"{_count_params(student):,} parameters"
    return teacher_gm, changes, student


def cmd_grow(args: argparse.Namespace, ui: UI) -> int:
    """``fxgrow grow``: widen and/or add residual blocks, verify, save (a Hugging Face folder in
    gives a folder out)."""
    _check_factor(args)
    from ..hf.folder import is_folder

    if is_folder(args.model):  # a Hugging Face folder in, one out: fxgrow/hf/cli.py
        from ..hf.cli import command

        return command(args, _assignments)
    _check_output(args, (".safetensors",))
    whole = _load(args, ui)
    loaded, call = narrow(whole, args, ui)
    teacher_gm, changes, student = _grow(loaded, args, ui)
    result, tol, ok = _verify(loaded, student, args, ui)
    check_whole(whole, call, student, args, ui)
    saved = _save(student, loaded, args, ui)
    _report(
        loaded,
        student,
        result,
        tol,
        ok,
        saved,
        changes,
        _new_modules(teacher_gm, student),
        args,
        teacher_gm,
    )
    return EXIT_OK


def cmd_draw(args: argparse.Namespace, ui: UI) -> int:
    """``fxgrow draw``: draw the model, or teacher -> student when grown here or given by
    ``--student`` (which must record this model as its teacher)."""
    from ..drawing import draw
    from ..drawing.render import dot_binary

    _check_factor(args)
    out = Path(args.output)
    _check_output(args, (".svg", ".png", ".pdf", ".dot", ".gv", ".html"))
    if out.suffix.lower() in (".svg", ".png", ".pdf", ".html") and dot_binary() is None:
        from ..drawing import GraphvizNotFoundError

        raise GraphvizNotFoundError(
            f"writing {out.name} needs Graphviz's `dot` program, which is not on PATH: install "
            f"Graphviz (apt-get install graphviz / brew install graphviz / conda install "
            f"graphviz), or write {out.with_suffix('.dot').name} instead"
        )
    student = None
    grows = args.factor is not None or args.width or args.blocks
    if args.student and grows:
        raise SpecError(
            "give either --student FILE or growth options (--factor/--width/--blocks), not both"
        )
    if args.student and not Path(args.student).is_file():
        raise SpecError(f"--student: no such file: {args.student}")
    loaded = _load(args, ui)
    if args.student:
        from ..io import load

        _check_student(args.student, loaded)
        with ui.step(f"loading {args.student}"):
            student = load(args.student, trusted=args.trust or (), weights=args.run)
    elif grows:
        _, _, student = _grow(loaded, args, ui)
    collapse: Any = args.collapse
    if isinstance(collapse, str) and collapse.isdigit():
        collapse = int(collapse)
    legends: dict[str, bool | str] = {"auto": "auto", "all": True, "none": False}
    legend = legends[args.legend]
    with ui.step(f"drawing {out}") as s:
        draw(
            loaded.model,
            loaded.inputs,
            out,
            student=student,
            collapse=collapse,
            legend=legend,
            rankdir=args.rankdir,
            title=args.title,
            sizes=args.sizes,
            dpi=args.dpi,
            **_trace_options(args),
        )
        s["done"] = f"{out.stat().st_size / 1e3:.0f} kB"
    print(f"wrote {out}" + (" (teacher → student)" if student is not None else ""))
    return EXIT_OK


def _check_student(path: str, loaded: Loaded) -> None:
    """--student must have been grown from the model drawn (by the fingerprint save recorded)."""
    from ..io import fingerprint, info

    if not Path(path).is_file():
        raise SpecError(f"--student: no such file: {path}")
    recorded = (info(path).get("teacher") or {}).get("fingerprint")
    if recorded is None:
        raise SpecError(
            f"--student {path} does not record which model it was grown from (it "
            f"was saved without teacher=); draw it on its own: fxgrow draw {path} "
            f"-o ..."
        )
    if recorded != fingerprint(loaded.model):
        raise SpecError(
            f"--student {path} was not grown from {loaded.label} (its recorded "
            f"teacher fingerprint {recorded} differs from this model's "
            f"{fingerprint(loaded.model)}); give the model it was grown from, with "
            f"the same options, or draw the student on its own: fxgrow draw {path} "
            f"-o ..."
        )
