"""The ``fxgrow`` command line: inspect, widen, deepen, grow and draw models.

Exit status: 0 success; 2 a user error (bad model spec, input shape, width or name; a model fxgrow
cannot capture; a group that cannot widen; a saved file fxgrow refuses; a student that would not
fit in memory; the machine's state: out of memory, a file that cannot be written), printed as one
line; 1 an internal error (including a student that fails verification, which is a bug in
fxgrow).  Everything that can be checked before work starts (options, -o, --student) is."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cli_models import (LARGE, Loaded, SpecError, _close, _count_params,  # noqa: F401
                         _describe_inputs, _short, _split_spec, _value, load_model)
from .cli_within import add_flag as add_within_flag
from .cli_within import check_whole, narrow
from .errors import FxgrowError, PreservationError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


class ResourceError(FxgrowError):
    """The requested growth would not fit in this machine's memory."""


# -- progress and tables ---------------------------------------------------------------------------

class UI:
    """Progress on stderr: a spinner on terminals; otherwise a line when a step has run for a
    second ("… analysing") and one when it ends ("✓ analysing: 14 groups (2.1 s)")."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[dict]:
        """``with ui.step("analysing") as s: ...; s["done"] = "14 groups"``."""
        state: dict = {"done": ""}
        if self.quiet:
            yield state
            return
        t0 = time.perf_counter()
        stop = threading.Event()
        spinner = None
        if self.tty:
            def spin() -> None:
                k = 0
                while not stop.wait(0.1):
                    self.stream.write(f"\r{self.FRAMES[k % len(self.FRAMES)]} {text} "
                                      f"{time.perf_counter() - t0:.1f}s")
                    self.stream.flush()
                    k += 1
            spinner = threading.Thread(target=spin, daemon=True)
            spinner.start()
        else:  # a log: say what is running once it takes more than a second
            def announce() -> None:
                if not stop.wait(1.0):
                    self.stream.write(f"… {text}\n")
                    self.stream.flush()
            spinner = threading.Thread(target=announce, daemon=True)
            spinner.start()
        ok = False
        try:
            yield state
            ok = True
        finally:
            stop.set()
            if spinner is not None:
                spinner.join()
            if self.tty:
                self.stream.write("\r\033[K")
            dt = time.perf_counter() - t0
            mark = "✓" if ok else "✗"
            extra = f": {state['done']}" if state["done"] and ok else ""
            self.stream.write(f"{mark} {text}{extra} ({dt:.1f} s)\n")
            self.stream.flush()


def table(headers: list[str], rows: list[list[Any]], align: str = "") -> str:
    """A plain-text table; ``align`` has one of "l"/"r" per column (default left)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align.ljust(len(headers), "l")

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if a == "r" else c.center(w) if a == "c" else c.ljust(w)
                         for c, w, a in zip(row, widths, align)).rstrip()
    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


# -- options ----------------------------------------------------------------------------------------

def _assignments(items: list[str] | None, what: str, example: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        for part in item.split(","):
            if not part.strip():
                continue
            name, eq, value = part.partition("=")
            if not eq or not name.strip():
                raise SpecError(f"{what} takes NAME=N (e.g. {example}), got {part!r}")
            try:
                out[name.strip()] = int(value)
            except ValueError:
                raise SpecError(f"{what} {name.strip()}={value!r}: the value must be an integer "
                                f"(e.g. {example})") from None
    return out


def _trace_options(args: argparse.Namespace) -> dict:
    opts: dict = {"frontend": args.frontend}
    if getattr(args, "leaf", None):
        opts["leaf_modules"] = list(args.leaf)
    return opts


def _check_factor(args: argparse.Namespace) -> None:
    from .cli_growth import check_init_flag
    check_init_flag(args)
    f = getattr(args, "factor", None)
    if f is not None and (not math.isfinite(f) or f < 1):
        from .errors import WidthError
        raise WidthError(f"--factor must be a number >= 1 (fxgrow only grows), got {f:g}")


# -- shared steps -------------------------------------------------------------------------------------

def _load(args: argparse.Namespace, ui: UI) -> Loaded:
    with ui.step(f"building {args.model}") as s:
        loaded = load_model(args)
        s["done"] = (f"{type(loaded.model).__name__}, {_count_params(loaded.model):,} "
                     f"parameters, input {_describe_inputs(loaded.inputs)}")
    return loaded


def _analyse(loaded: Loaded, args: argparse.Namespace, ui: UI, outputs: str = "fixed"):
    from .api import analyze
    with ui.step("tracing and analysing channel groups") as s:
        try:
            analysis = analyze(loaded.model, loaded.inputs, outputs=outputs,
                               **_trace_options(args))
        except FxgrowError:
            raise
        except Exception as e:
            if getattr(loaded.model, "meta", {}).get("fxgrow_weights") is False:
                raise SpecError(f"{loaded.label} cannot be analysed without running it "
                                f"({type(e).__name__}: {_short(e, 120)}); pass --run to read its "
                                f"weights and run its graph on example data") from e
            raise
        s["done"] = (f"{len(analysis.groups)} groups, {len(analysis.widenable)} widenable "
                     f"({analysis.gm.meta.get('fxgrow_frontend', 'fx')} graph)")
    return analysis


def _plan(loaded: Loaded, args: argparse.Namespace, ui: UI):
    """(analysis, plan) for --factor / --width: nothing is rewritten or allocated yet."""
    from .api import plan as make_plan
    widths = _assignments(args.width, "--width", "layer1.0.conv1=96")
    if args.factor is None and not widths:
        raise SpecError("say how to widen: --factor 1.5 (every widenable group) and/or "
                        "--width GROUP=N")
    analysis = _analyse(loaded, args, ui, outputs=getattr(args, "outputs", "fixed"))
    with ui.step("planning") as s:
        plan = make_plan(analysis, widths=widths or None, factor=args.factor, seed=args.seed,
                         split=args.split, noise=args.noise,
                         approximate=getattr(args, "approximate", False),
                         init=getattr(args, "init", "replicate"))
        s["done"] = f"{len(plan.changes)} groups to widen"
    return analysis, plan


def _budget(analysis: Any, plan: Any, args: argparse.Namespace, ui: UI,
            stages: list | None = None, blocks: dict | None = None) -> Any:
    """Print the planned student's size; refuse (without --yes) when it cannot fit."""
    from .estimate import estimate, human
    est = estimate(analysis, plan, stages=stages, blocks=blocks)
    if not ui.quiet or not est.fits or getattr(args, "plan_only", False):
        print(f"fxgrow: {est}", file=ui.stream)
    if not est.fits and not getattr(args, "yes", False) and not getattr(args, "plan_only", False):
        raise ResourceError(
            f"the student would need about {human(est.needed_bytes)} of memory to build, and "
            f"{human(est.available_bytes or 0)} is available; grow less (a smaller --factor, "
            f"--width or --blocks), or pass --yes to try anyway")
    return est


def _deepen_budget(loaded: Loaded, args: argparse.Namespace, ui: UI, options: dict) -> None:
    """deepen's planned size: the same deepen on a meta copy of the model (nothing allocated);
    where that dry run cannot run on meta tensors, say so and go on."""
    from .api import deepen
    from .estimate import human, measured, meta_copy
    try:
        with ui.step("planning on meta tensors"):
            student = deepen(meta_copy(loaded.model), tuple(x.to("meta") for x in loaded.inputs),
                             **options)
    except Exception as e:  # noqa: BLE001  (the real run reports real errors)
        if not ui.quiet:
            print(f"fxgrow: planned student: size unknown before building (the dry run on meta "
                  f"tensors failed: {type(e).__name__}); growing it needs about "
                  f"{human(_bytes(loaded.model))} more memory (a copy of the teacher) plus "
                  f"the inserted layers", file=ui.stream)
        return
    est = measured(loaded.model, student)
    if not ui.quiet or not est.fits:
        print(f"fxgrow: {est}", file=ui.stream)
    if not est.fits and not args.yes:
        raise ResourceError(
            f"the student would need about {human(est.needed_bytes)} of memory to build, and "
            f"{human(est.available_bytes or 0)} is available; insert less, or pass --yes to "
            f"try anyway")


def _bytes(m: Any) -> int:
    seen = {id(t): t for t in [*m.parameters(), *m.buffers()]}
    return sum(t.numel() * t.element_size() for t in seen.values())


def _apply(analysis: Any, plan: Any, ui: UI) -> Any:
    from .rewrite import apply
    from .rewrite.init import initialise
    with ui.step("rewriting the graph") as s:
        student = apply(analysis, plan)
        initialise(analysis, plan, student)  # init="zero": the new units' fresh fan-in
        s["done"] = f"{_count_params(student):,} parameters"
    return student


def _widen(loaded: Loaded, args: argparse.Namespace, ui: UI):
    """(analysis, plan, student) for --factor / --width, the size checked before rewriting."""
    analysis, plan = _plan(loaded, args, ui)
    _budget(analysis, plan, args, ui)
    return analysis, plan, _apply(analysis, plan, ui)


def _verify(loaded: Loaded, student: Any, args: argparse.Namespace, ui: UI):
    from .verify import compare
    from .verify.compare import tolerance
    with ui.step("verifying against the teacher") as s:
        result = compare(loaded.model, student, loaded.inputs)
        tol = tolerance(loaded.inputs, loaded.model)
        s["done"] = str(result)
    ok = result.max_rel <= tol
    if getattr(args, "noise", 0.0) or getattr(args, "approximate", False):
        return result, tol, ok  # not exact by design: measured, reported, never refused
    if not ok:  # beyond the dtype's floor: calibrate against the teacher's own rounding
        from .verify.compare import verify
        try:
            result, ok = verify(loaded.model, student, loaded.inputs), True
        except PreservationError as e:
            if args.verify:
                raise PreservationError(f"{e} (--no-verify writes the student anyway)") from e
    return result, tol, ok


def _check_output(args: argparse.Namespace, suffixes: tuple[str, ...]) -> None:
    """-o: the right suffix, an existing writable folder, not a folder itself -- checked before
    any work is done."""
    if not getattr(args, "output", None):
        return
    out = Path(args.output)
    if out.is_dir():
        raise SpecError(f"-o/--output {args.output!r} is a folder; give a file name such as "
                        f"{out / ('student' + suffixes[0])}")
    if out.suffix.lower() not in suffixes:
        names = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else \
            suffixes[0]
        raise SpecError(f"-o/--output must end in {names}, got {args.output!r}"
                        + (f" (e.g. {out.with_suffix(suffixes[0])})" if out.name else ""))
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise SpecError(f"-o/--output: the folder {str(folder)!r} does not exist; create it "
                        f"(mkdir -p {folder}) or write elsewhere")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError(f"-o/--output: the folder {str(folder)!r} is not writable; write "
                        f"elsewhere")
    if out.exists() and not os.access(out, os.W_OK):
        raise SpecError(f"-o/--output: {args.output!r} exists and is not writable")


def _save(student: Any, loaded: Loaded, args: argparse.Namespace, ui: UI) -> str | None:
    if not args.output:
        return None
    from .io import save
    out = Path(args.output)
    _check_output(args, (".safetensors",))
    with ui.step(f"saving {out}") as s:
        save(student, out, example_inputs=loaded.inputs, teacher=loaded.model)
        s["done"] = f"{out.stat().st_size / 1e6:.1f} MB"
    return str(out)


def _new_modules(teacher_gm: Any, student: Any) -> list[str]:
    before = {n for n, _ in teacher_gm.named_modules()}
    new = [n for n, _ in student.named_modules() if n and n not in before]
    return [n for n in new if not any(n.startswith(p + ".") for p in new if p != n)]


def _report(loaded: Loaded, student: Any, result: Any, tol: float, ok: bool, saved: str | None,
            changes: list, inserted: list[str], args: argparse.Namespace,
            teacher_gm: Any = None) -> None:
    n_t, n_s = _count_params(loaded.model), _count_params(student)
    teacher_nodes = {n.name for n in teacher_gm.graph.nodes} if teacher_gm is not None else set()
    new_nodes = [n.name for n in student.graph.nodes
                 if teacher_gm is not None and n.name not in teacher_nodes and n.op != "get_attr"]
    if args.json:
        doc = {"model": loaded.label, "inputs": [list(x.shape) for x in loaded.inputs],
               "groups_changed": [{"group": c.group, "old": c.old_width, "new": c.new_width,
                                   "init": c.init} for c in changes],
               "modules_inserted": inserted, "nodes_inserted": len(new_nodes),
               "parameters": {"before": n_t, "after": n_s},
               "preservation": {"max_abs": result.max_abs, "max_rel": result.max_rel,
                                "tolerance": tol, "ok": ok},
               "output": saved}
        print(json.dumps(doc, indent=2))
        return
    print(f"{loaded.label}  (input {_describe_inputs(loaded.inputs)})")
    if changes:
        print(f"\n{len(changes)} channel groups widened:")
        fresh = any(c.init != "replicate" for c in changes) or \
            getattr(args, "init", "replicate") != "replicate"
        print(table(["group", "width", "", "new"] + (["init"] if fresh else []),
                    [[c.group, c.old_width, "→", c.new_width] + ([c.init] if fresh else [])
                     for c in changes], "lrcrl"[:5 if fresh else 4]))
    if inserted:
        print(f"\ninserted ({len(new_nodes)} nodes):")
        for name in inserted:
            print(f"  + {name}")
    print()
    rows = [["parameters", f"{n_t:,} → {n_s:,} ({n_s / max(n_t, 1):.2f}x)"],
            ["preservation", f"{result}  " + (
                "[not exact by design: --noise]" if getattr(args, "noise", 0.0) else
                "[not exact by design: --approximate]" if getattr(args, "approximate", False)
                else f"[{'ok' if ok else 'NOT OK'}: max rel err "
                     f"{'<=' if ok else '>'} tolerance {tol:g}; the tolerance bounds the "
                     f"relative error]")],
            ["saved", saved or "not saved (give -o student.safetensors)"]]
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


# -- commands -----------------------------------------------------------------------------------------

def cmd_inspect(args: argparse.Namespace, ui: UI) -> int:
    loaded, _ = narrow(_load(args, ui), args, ui)
    analysis = _analyse(loaded, args, ui, outputs=args.outputs)
    groups = analysis.all_groups if args.all else analysis.groups
    stages = []
    with contextlib.suppress(Exception):
        from .analysis.blocks import find_stages
        from .analysis.shapes import propagate
        stages = find_stages(analysis.gm, propagate(analysis.gm, analysis.example_inputs))
    if args.json:
        doc = {"model": loaded.label, "class": type(loaded.model).__name__,
               "parameters": _count_params(loaded.model),
               "inputs": [list(x.shape) for x in loaded.inputs],
               "frontend": analysis.gm.meta.get("fxgrow_frontend", "fx"),
               "groups": [{"name": g.name, "width": g.width, "unit": g.unit,
                           "members": len(g.members), "widenable": g.widenable,
                           "modules": list(g.modules),
                           "blockers": [{"node": b.node, "reason": b.reason, "kind": b.kind}
                                        for b in g.blockers]} for g in groups],
               "stages": [{"name": s.name, "blocks": [b.path for b in s.blocks]}
                          for s in stages]}
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    print(f"{loaded.label}: {type(loaded.model).__name__}, {_count_params(loaded.model):,} "
          f"parameters, input {_describe_inputs(loaded.inputs)}, "
          f"{analysis.gm.meta.get('fxgrow_frontend', 'fx')} graph of "
          f"{len(analysis.gm.graph.nodes)} nodes\n")
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
            status = _short(f"blocked by {b}" + (f" (+{more} more)" if more > 0 else ""),
                            args.width_limit)
        unit = f"{g.unit}x{g.multiplicity}" if g.multiplicity > 1 else ""
        rows.append([g.name, g.width, unit, len(g.members), status])
    print(table(["group", "width", "unit", "members", "widenable / blockers"], rows, "lrrrl"))
    blocked = sum(1 for g in groups if not g.widenable and not g.fixed)
    print(f"\n{len(groups)} groups: {sum(g.widenable for g in groups)} widenable, "
          f"{sum(1 for g in groups if g.fixed)} fixed by the model's inputs/outputs, "
          f"{blocked} blocked")
    if stages:
        print("\nresidual stages (fxgrow grow --blocks STAGE=N):")
        print(table(["stage", "blocks", "block paths"],
                    [[s.name, s.count, _short(", ".join(b.path for b in s.blocks), 60)]
                     for s in stages], "lrl"))
    if args.rank:
        from .cli_growth import print_rank
        print_rank(loaded, args)
    return EXIT_OK


def cmd_widen(args: argparse.Namespace, ui: UI) -> int:
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
    from .api import capture, deepen
    _check_output(args, (".safetensors",))
    loaded = _load(args, ui)
    after = _after_names(args.after)
    options = dict(after=after, kind=args.kind, kernel_size=args.kernel_size,
                   batchnorm=args.batchnorm, layer=args.layer, seed=args.seed, verify=False,
                   as_graph=True, **_trace_options(args))
    _deepen_budget(loaded, args, ui, options)
    with ui.step(f"inserting {args.kind} layers after {', '.join(after)}") as s:
        student = deepen(loaded.model, loaded.inputs, **options)
        s["done"] = f"{_count_params(student):,} parameters"
    teacher_gm = capture(loaded.model, loaded.inputs, **_trace_options(args))
    result, tol, ok = _verify(loaded, student, args, ui)
    saved = _save(student, loaded, args, ui)
    _report(loaded, student, result, tol, ok, saved, [], _new_modules(teacher_gm, student), args,
            teacher_gm)
    return EXIT_OK


def _grow(loaded: Loaded, args: argparse.Namespace, ui: UI):
    """(teacher graph, plan changes, student) for --blocks and --factor/--width; the planned
    size is printed and checked before anything is built."""
    from .api import grow, stages
    blocks = _assignments(args.blocks, "--blocks", "layer1=3")
    widths = _assignments(args.width, "--width", "layer1.0.conv1=96")
    if not blocks and args.factor is None and not widths:
        raise SpecError("say how to grow: --blocks STAGE=N (new block count) and/or --factor F "
                        "/ --width GROUP=N")
    plan = None
    if args.factor is not None or widths:
        analysis, plan = _plan(loaded, args, ui)
    else:
        from types import SimpleNamespace

        from .api import capture
        with ui.step("tracing") as s:
            gm = capture(loaded.model, loaded.inputs, **_trace_options(args))
            s["done"] = f"{len(gm.graph.nodes)} nodes"
        analysis = SimpleNamespace(gm=gm, all_groups=[])
    found = stages(analysis.gm, loaded.inputs) if blocks else []
    _budget(analysis, plan, args, ui, found, blocks)
    teacher_gm, changes = analysis.gm, list(plan.changes) if plan is not None else []
    student = _apply(analysis, plan, ui) if plan is not None else teacher_gm
    if blocks:
        with ui.step(f"growing stages {', '.join(f'{k} to {v}' for k, v in blocks.items())}") \
                as s:
            student = grow(student, loaded.inputs, blocks=blocks, seed=args.seed, verify=False)
            s["done"] = f"{_count_params(student):,} parameters"
    return teacher_gm, changes, student


def cmd_grow(args: argparse.Namespace, ui: UI) -> int:
    _check_factor(args)
    from .hf.folder import is_folder
    if is_folder(args.model):  # a Hugging Face folder in, one out: fxgrow/hf/cli.py
        from .hf.cli import command
        return command(args, _assignments)
    _check_output(args, (".safetensors",))
    whole = _load(args, ui)
    loaded, call = narrow(whole, args, ui)
    teacher_gm, changes, student = _grow(loaded, args, ui)
    result, tol, ok = _verify(loaded, student, args, ui)
    check_whole(whole, call, student, args, ui)
    saved = _save(student, loaded, args, ui)
    _report(loaded, student, result, tol, ok, saved, changes, _new_modules(teacher_gm, student),
            args, teacher_gm)
    return EXIT_OK


def cmd_draw(args: argparse.Namespace, ui: UI) -> int:
    from .draw import draw
    from .draw.render import dot_binary
    _check_factor(args)
    out = Path(args.output)
    _check_output(args, (".svg", ".png", ".pdf", ".dot", ".gv", ".html"))
    if out.suffix.lower() in (".svg", ".png", ".pdf", ".html") and dot_binary() is None:
        from .draw import GraphvizNotFoundError
        raise GraphvizNotFoundError(
            f"writing {out.name} needs Graphviz's `dot` program, which is not on PATH: install "
            f"Graphviz (apt-get install graphviz / brew install graphviz / conda install "
            f"graphviz), or write {out.with_suffix('.dot').name} instead")
    student = None
    grows = args.factor is not None or args.width or args.blocks
    if args.student and grows:
        raise SpecError("give either --student FILE or growth options (--factor/--width/"
                        "--blocks), not both")
    if args.student and not Path(args.student).is_file():
        raise SpecError(f"--student: no such file: {args.student}")
    loaded = _load(args, ui)
    if args.student:
        from .io import load
        _check_student(args.student, loaded)
        with ui.step(f"loading {args.student}"):
            student = load(args.student, trusted=args.trust or (), weights=args.run)
    elif grows:
        _, _, student = _grow(loaded, args, ui)
    collapse: Any = args.collapse
    if isinstance(collapse, str) and collapse.isdigit():
        collapse = int(collapse)
    legend = {"auto": "auto", "all": True, "none": False}[args.legend]
    with ui.step(f"drawing {out}") as s:
        draw(loaded.model, loaded.inputs, out, student=student, collapse=collapse,
             legend=legend, rankdir=args.rankdir, title=args.title, sizes=args.sizes,
             dpi=args.dpi, **_trace_options(args))
        s["done"] = f"{out.stat().st_size / 1e3:.0f} kB"
    print(f"wrote {out}" + (" (teacher → student)" if student is not None else ""))
    return EXIT_OK


def _check_student(path: str, loaded: Loaded) -> None:
    """--student must have been grown from the model drawn (by the fingerprint save recorded)."""
    from .io import fingerprint, info
    if not Path(path).is_file():
        raise SpecError(f"--student: no such file: {path}")
    recorded = (info(path).get("teacher") or {}).get("fingerprint")
    if recorded is None:
        raise SpecError(f"--student {path} does not record which model it was grown from (it "
                        f"was saved without teacher=); draw it on its own: fxgrow draw {path} "
                        f"-o ...")
    if recorded != fingerprint(loaded.model):
        raise SpecError(f"--student {path} was not grown from {loaded.label} (its recorded "
                        f"teacher fingerprint {recorded} differs from this model's "
                        f"{fingerprint(loaded.model)}); give the model it was grown from, with "
                        f"the same options, or draw the student on its own: fxgrow draw {path} "
                        f"-o ...")


def cmd_demo(args: argparse.Namespace, ui: UI) -> int:
    import inspect as _inspect

    from .demo import run
    accepted = _inspect.signature(run).parameters
    extra = {"out_dir": args.out_dir, "teacher_steps": args.teacher_steps,
             "student_steps": args.student_steps, "threads": args.threads,
             "progress": False if args.quiet else None}
    kwargs = {k: v for k, v in extra.items() if v is not None and k in accepted}
    return run(args.factor, args.seed, **kwargs)


# -- the parser ---------------------------------------------------------------------------------------

MODEL_HELP = """\
models:
  torchvision:NAME[?k=v]        e.g. torchvision:resnet18, torchvision:resnet50?num_classes=10
  timm:NAME[?k=v]               e.g. timm:resnet50d, timm:vit_tiny_patch16_224?img_size=64
  hf:CLASS?CONFIG               a transformers model class built from its config with random
                                weights and use_cache=False, e.g.
                                'hf:LlamaForCausalLM?hidden_size=64&num_hidden_layers=2'
  path/to/file.py:FACTORY[?k=v] a function (or module object) in a Python file
  FILE.safetensors              a model saved by fxgrow (fxgrow widen ... -o FILE)
  Models are randomly initialised (nothing is downloaded); --seed fixes weights and inputs.

inputs:
  --input-shape 1,3,224,224     random normal input of that shape (repeat for more inputs)
  --input-ids 2,16              random token ids, batch x length (language models)
  defaults: 1,3,224,224 (torchvision), the model's input size (timm), ids 2,16 (hf),
  the recorded shapes (saved files)

exit status: 0 ok, 2 user error (one line on stderr), 1 internal error"""

EPILOG = f"""\
examples:
  fxgrow inspect torchvision:resnet18 --input-shape 1,3,64,64
  fxgrow widen torchvision:resnet18 --factor 1.5 -o wide.safetensors
  fxgrow widen timm:resnet50d --width layer1.0.conv1=96 --input-shape 1,3,64,64
  fxgrow deepen torchvision:resnet18 --after layer1.0.relu --kind residual
  fxgrow grow torchvision:resnet18 --blocks layer1=3 --factor 1.5 -o grown.safetensors
  fxgrow grow 'hf:LlamaForCausalLM?hidden_size=64&intermediate_size=128&num_hidden_layers=2' \\
      --blocks model.layers=4 --input-ids 2,16
  fxgrow draw torchvision:resnet50 -o resnet50.svg
  fxgrow draw torchvision:resnet18 --factor 1.5 --blocks layer1=3 -o before_after.png

{MODEL_HELP}"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the model: torchvision:NAME, timm:NAME, hf:CLASS?config, "
                                 "file.py:factory or a saved .safetensors (see below)")
    g = p.add_argument_group("model and inputs")
    g.add_argument("--input-shape", action="append", metavar="N,C,H,W",
                   help="shape of a random float input (repeat for several inputs)")
    g.add_argument("--input-ids", metavar="B,T",
                   help="random token ids of batch B and length T (language models)")
    g.add_argument("--vocab", type=int, help="token ids are drawn below this (default: the "
                                              "model's config.vocab_size)")
    g.add_argument("--dtype", help="run the model in this floating dtype (e.g. float64)")
    g.add_argument("--seed", type=int, default=0, help="seed for weights, inputs and "
                                                       "replication maps (default 0)")
    g.add_argument("--frontend", choices=("auto", "fx", "export"), default="auto",
                   help="graph capture: fx tracing, torch.export, or fx then export (default)")
    g.add_argument("--leaf", action="append", metavar="MODULE",
                   help="keep this module (qualified name) as one opaque call when tracing")
    g.add_argument("--allow-large", action="store_true",
                   help="build hf: models over 2B parameters")
    g.add_argument("--trust", action="append", metavar="NAME",
                   help="let a saved .safetensors file use this function, method or module "
                        "class (qualified name, or a package prefix) beyond fxgrow's allowlist; "
                        "only for files from a source you would take code from")
    o = p.add_argument_group("output")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    o.add_argument("-v", "--verbose", action="store_true",
                   help="show what libraries print (warnings, torch logs)")
    o.add_argument("--traceback", action="store_true",
                   help="print the Python traceback of internal errors")


def _growth(p: argparse.ArgumentParser, blocks: bool) -> None:
    g = p.add_argument_group("growth")
    g.add_argument("--factor", type=float, metavar="F",
                   help="widen every widenable group by F (rounded up to what each allows)")
    g.add_argument("--width", action="append", metavar="GROUP=N",
                   help="new width of one group, named by group or module (repeatable; "
                        "overrides --factor for that group)")
    g.add_argument("--split", choices=("equal", "random"), default="equal",
                   help="how a replicated unit's outgoing weights are shared among its copies: "
                        "equally (Net2Net) or by random shares summing to one (exact too, and "
                        "the copies learn apart)")
    g.add_argument("--init", choices=("replicate", "zero", "gradmax"), default="replicate",
                   help="how new units start: copies of old ones (Net2Net), or a fresh random "
                        "fan-in and a zero fan-out (exact; normalised groups still replicate); "
                        "gradmax needs a loss and a batch: use fxgrow.widen(init=\"gradmax\", "
                        "loss_fn=..., batch=...) from Python")
    g.add_argument("--noise", type=float, default=0.0, metavar="X",
                   help="add the paper's noise to the copies (relative scale; not exact: the "
                        "error is reported, not checked)")
    g.add_argument("--approximate", action="store_true",
                   help="let normalised groups (LayerNorm/GroupNorm/RMSNorm) grow by non-whole "
                        "factors: not exact; the error is reported, not checked")
    g.add_argument("--yes", action="store_true",
                   help="grow even when the planned student does not fit in available memory")
    if blocks:
        g.add_argument("--blocks", action="append", metavar="STAGE=N",
                       help="new number of blocks in a residual stage (repeatable; see the "
                            "stages `fxgrow inspect` lists)")


def _run_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", action="store_true",
                   help="for a saved .safetensors model: read its weights and run its graph "
                        "on example data where the analysis needs values (by default a "
                        "saved file is analysed on meta tensors: its graph never runs on data)")


def _results(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE.safetensors",
                   help="save the student (loads back with fxgrow.load)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="report a failed preservation check instead of exiting with status 1")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="fxgrow", formatter_class=fmt, epilog=EPILOG,
        description="Grow trained PyTorch models without changing what they compute: "
                    "Net2Net widening and deepening as torch.fx graph rewrites, verified "
                    "against the original.")
    parser.add_argument("--version", action="version", version=f"fxgrow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", formatter_class=fmt, help="list a model's channel groups",
                       description="Trace a model and list its channel groups: the sets of "
                                   "channels that must grow together, their widths, how many "
                                   "tensors they span, and what blocks the ones that cannot "
                                   "grow.  Also lists residual stages for `grow --blocks`.",
                       epilog="examples:\n  fxgrow inspect torchvision:resnet18\n"
                              "  fxgrow inspect timm:resnet50d --input-shape 1,3,64,64 --json\n\n"
                              + MODEL_HELP)
    _common(p)
    p.add_argument("--all", action="store_true",
                   help="also list classes tied to non-channel axes (spatial, kernel)")
    p.add_argument("--outputs", choices=("fixed", "grow"), default="fixed",
                   help="whether the model's output channels may grow (default fixed)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--rank", action="store_true", help="also rank the widenable groups by the "
                   "gradient new units would get (fxgrow.rank_groups; synthetic batch)")
    p.add_argument("--width-limit", type=int, default=72, help=argparse.SUPPRESS)
    add_within_flag(p)
    _run_flag(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("widen", formatter_class=fmt, help="widen channel groups (Net2WiderNet)",
                       description="Widen channel groups by replicating units and dividing "
                                   "their outgoing weights, then check the student against "
                                   "the teacher and report the change.",
                       epilog="examples:\n  fxgrow widen torchvision:resnet18 --factor 1.5 "
                              "-o wide.safetensors\n  fxgrow widen torchvision:resnet18 --width "
                              "layer1.0.conv1=96 --width conv1=128\n  fxgrow widen "
                              "torchvision:resnet18 --factor 2 --plan-only --json\n\n"
                              + MODEL_HELP)
    _common(p)
    _growth(p, blocks=False)
    p.add_argument("--outputs", choices=("fixed", "grow"), default="fixed",
                   help="let output channel axes widen (encoders; default fixed)")
    p.add_argument("--plan-only", action="store_true", help="print the plan, change nothing")
    add_within_flag(p)
    _results(p)
    p.set_defaults(func=cmd_widen)

    p = sub.add_parser("deepen", formatter_class=fmt, help="insert identity layers "
                                                           "(Net2DeeperNet)",
                       description="Insert layers that start as the identity after nodes or "
                                   "modules (identity / residual), or copy residual blocks "
                                   "with their last layer zeroed (block).",
                       epilog="examples:\n  fxgrow deepen torchvision:resnet18 --after "
                              "layer1.0.relu --kind residual\n  fxgrow deepen "
                              "torchvision:resnet18 --after layer2.1 --kind block\n\n"
                              + MODEL_HELP)
    _common(p)
    g = p.add_argument_group("deepening")
    g.add_argument("--after", action="append", required=True, metavar="NAME",
                   help="node or module to insert after (repeatable or comma-separated)")
    g.add_argument("--kind", choices=("identity", "residual", "block"), default="identity",
                   help="identity layer, residual h + f(h) with f zero, or a copy of a block")
    g.add_argument("--kernel-size", type=int, default=3, help="of inserted convs (default 3)")
    g.add_argument("--batchnorm", action="store_true", help="add an identity BatchNorm")
    g.add_argument("--layer", choices=("linear", "conv"), help="force the inserted layer type")
    g.add_argument("--yes", action="store_true",
                   help="deepen even when the planned student does not fit in available memory")
    _results(p)
    p.set_defaults(func=cmd_deepen)

    p = sub.add_parser("grow", formatter_class=fmt, help="add residual blocks and/or widen",
                       description="Grow residual stages to more blocks (copies of the last "
                                   "block, starting as the identity) and/or widen, in one "
                                   "verified step.",
                       epilog="examples:\n  fxgrow grow torchvision:resnet18 --blocks layer1=3 "
                              "--blocks layer2=3\n  fxgrow grow torchvision:resnet50 --blocks "
                              "layer3=23 --factor 1.25 -o grown.safetensors\n\n" + MODEL_HELP)
    _common(p)
    _growth(p, blocks=True)
    add_within_flag(p)
    _results(p)
    h = p.add_argument_group("Hugging Face folders (MODEL is a folder with a config.json)")
    h.add_argument("--to-config", action="append", metavar="KEY=VALUE|config.json",
                   help="grow to this config (repeat KEY=VALUE, or a target config.json)")
    h.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (5GB)")
    h.add_argument("--untie", action="store_true", help="untie tied embeddings")
    h.add_argument("--overwrite", action="store_true", help="replace an existing -o folder")
    h.add_argument("--stream", action="store_true",
                   help="grow tensor by tensor from the files, never holding the model in "
                        "memory (checkpoints larger than memory; docs/streaming.md)")
    h.add_argument("--placement", choices=("interleave", "append"), default="interleave",
                   help="with --stream and --blocks: copies after evenly spaced blocks "
                        "(LLaMA-Pro, default) or at the end")
    p.set_defaults(func=cmd_grow)

    from .cli_growth import add_grow_kernel_parser
    add_grow_kernel_parser(sub, _common, _results, fmt, MODEL_HELP)

    p = sub.add_parser("draw", formatter_class=fmt, help="draw the graph and its channel groups",
                       description="Draw the model's graph with Graphviz: one colour per "
                                   "channel group on the edges it spans, blockers outlined in "
                                   "red, modules as clusters.  With growth options (or "
                                   "--student) draws the student in the teacher's colours, "
                                   "widened groups labelled old → new and inserted layers "
                                   "outlined.  .svg/.png/.pdf need Graphviz's `dot`; .dot "
                                   "writes the source.",
                       epilog="examples:\n  fxgrow draw torchvision:resnet50 -o resnet50.svg\n"
                              "  fxgrow draw torchvision:densenet121 -o densenet.svg "
                              "-o densenet.html\n  fxgrow draw torchvision:resnet18 --factor 1.5 "
                              "--blocks layer1=3 -o grown.png\n  fxgrow draw "
                              "torchvision:resnet18 --student wide.safetensors -o wide.svg\n\n"
                              + MODEL_HELP)
    _common(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.svg, .png, .pdf (Graphviz) or .dot (DOT text)")
    _growth(p, blocks=True)
    p.add_argument("--student", metavar="FILE.safetensors",
                   help="draw this saved student of the model (before/after view)")
    p.add_argument("--collapse", default="auto", metavar="auto|none|DEPTH|PATTERNS",
                   help="fold modules into boxes: auto (default: only large graphs), none, a "
                        "module depth (2: layer1.0), or comma-separated module paths / globs "
                        "('layer*.*')")
    p.add_argument("--legend", choices=("auto", "all", "none"), default="auto",
                   help="table of groups (auto: all up to 40, else blocked/new only)")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB",
                   help="top to bottom (default) or left to right")
    p.add_argument("--sizes", action="store_true",
                   help="also draw nodes that compute sizes (shape arithmetic)")
    p.add_argument("--title", help="title of the drawing")
    p.add_argument("--dpi", type=float, help="resolution of PNG output")
    _run_flag(p)
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("demo", help="train, grow exactly, keep training (the demo)",
                       description="The demo (fxgrow.demo.run): a small ResNet trains on "
                                   "scikit-learn's digits, fxgrow grows it wider and deeper "
                                   "exactly, training continues; compared with the same "
                                   "architecture trained from scratch.")
    p.add_argument("--factor", type=float, default=1.5, help="width factor (default 1.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", help="where the plot, drawing and student go")
    p.add_argument("--teacher-steps", type=int, help="training steps before growth")
    p.add_argument("--student-steps", type=int, help="training steps after growth")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_demo, traceback=False, verbose=True)
    return parser


def _one_line(e: BaseException) -> str:
    from .cli_advice import for_cli
    text = " ".join(str(e).split())
    return for_cli(text) or type(e).__name__


@contextlib.contextmanager
def _library_noise_hidden() -> Iterator[io.StringIO]:
    """Hide what libraries print while fxgrow works (torch.export prints failed graphs to
    stderr, warnings, torch's log messages below ERROR): fxgrow reports errors itself."""
    import logging
    import warnings

    import torch  # noqa: F401  (its log handlers exist once it is imported)

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.ERROR
    drop = _Drop()
    handlers = {h for name in ("torch", "") for h in logging.getLogger(name).handlers}
    for h in handlers:
        h.addFilter(drop)
    buffer = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        for h in handlers:
            h.removeFilter(drop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ui = UI(quiet=getattr(args, "quiet", False) or args.command == "demo")
    try:
        if "torch" not in sys.modules:  # the slowest part of a start: say what is happening
            with ui.step("importing torch"):
                import torch  # noqa: F401
        with contextlib.ExitStack() as stack:
            if not getattr(args, "verbose", False):
                stack.enter_context(_library_noise_hidden())
            return args.func(args, ui)
    except KeyboardInterrupt:
        print("fxgrow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        with contextlib.suppress(Exception):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except PreservationError as e:
        print(f"fxgrow: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_INTERNAL
    except MemoryError:
        print("fxgrow: error: out of memory; grow less (a smaller --factor, --width or "
              "--blocks) or use smaller example inputs (--input-shape)", file=sys.stderr)
        return EXIT_USER
    except OSError as e:  # the machine's state (disk full, permissions), not a bug
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"fxgrow: error: {e.strerror or _short(e, 200)}{where}", file=sys.stderr)
        return EXIT_USER
    except FxgrowError as e:
        print(f"fxgrow: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER
    except Exception as e:  # a bug: say so, traceback on request
        if getattr(args, "traceback", False):
            traceback.print_exc()
        print(f"fxgrow: internal error: {type(e).__name__}: {_short(e, 300)} (this is a bug in "
              f"fxgrow; rerun with --traceback for details and please report it)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
