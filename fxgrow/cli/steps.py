"""The command line's shared steps: options parsed into values, then load, analyse, plan,
check the size, rewrite, verify and save, each shown as one progress step.

Invariant: every check that needs no model (options, -o) raises a :class:`SpecError` before work
starts; a student that would not fit raises :class:`ResourceError` before it is built."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from ..errors import FxgrowError, PreservationError, ResourceError
from .console import UI
from .models import Loaded, SpecError, _count_params, _describe_inputs, _short, load_model

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
                raise SpecError(
                    f"{what} {name.strip()}={value!r}: the value must be an integer "
                    f"(e.g. {example})"
                ) from None
    return out


def _trace_options(args: argparse.Namespace) -> dict:
    opts: dict = {"frontend": args.frontend}
    if getattr(args, "leaf", None):
        opts["leaf_modules"] = list(args.leaf)
    return opts


def _check_factor(args: argparse.Namespace) -> None:
    from .growth import check_init_flag

    check_init_flag(args)
    f = getattr(args, "factor", None)
    if f is not None and (not math.isfinite(f) or f < 1):
        from ..errors import WidthError

        raise WidthError(f"--factor must be a number >= 1 (fxgrow only grows), got {f:g}")


# -- shared steps -------------------------------------------------------------------------------------


def _load(args: argparse.Namespace, ui: UI) -> Loaded:
    with ui.step(f"building {args.model}") as s:
        loaded = load_model(args)
        s["done"] = (
            f"{type(loaded.model).__name__}, {_count_params(loaded.model):,} "
            f"parameters, input {_describe_inputs(loaded.inputs)}"
        )
    return loaded


def _analyse(loaded: Loaded, args: argparse.Namespace, ui: UI, outputs: str = "fixed"):
    from ..api import analyze

    with ui.step("tracing and analysing channel groups") as s:
        try:
            analysis = analyze(loaded.model, loaded.inputs, outputs=outputs, **_trace_options(args))
        except FxgrowError:
            raise
        except Exception as e:
            from ..growth import growth_record

            record = growth_record(loaded.model)
            if record is not None and not record.weights:
                raise SpecError(
                    f"{loaded.label} cannot be analysed without running it "
                    f"({type(e).__name__}: {_short(e, 120)}); pass --run to read its "
                    f"weights and run its graph on example data"
                ) from e
            raise
        s["done"] = (
            f"{len(analysis.groups)} groups, {len(analysis.widenable)} widenable "
            f"({_frontend(analysis.gm)} graph)"
        )
    return analysis


def _plan(loaded: Loaded, args: argparse.Namespace, ui: UI):
    """(analysis, plan) for --factor / --width: nothing is rewritten or allocated yet."""
    from ..api import plan as make_plan

    widths = _assignments(args.width, "--width", "layer1.0.conv1=96")
    if args.factor is None and not widths:
        raise SpecError(
            "say how to widen: --factor 1.5 (every widenable group) and/or --width GROUP=N"
        )
    analysis = _analyse(loaded, args, ui, outputs=getattr(args, "outputs", "fixed"))
    with ui.step("planning") as s:
        plan = make_plan(
            analysis,
            widths=widths or None,
            factor=args.factor,
            seed=args.seed,
            split=args.split,
            noise=args.noise,
            approximate=getattr(args, "approximate", False),
            init=getattr(args, "init", "replicate"),
        )
        s["done"] = f"{len(plan.changes)} groups to widen" + (
            f", fresh units placed in {len(plan.placements)} producers of channel shuffle chains"
            if plan.placements
            else ""
        )
    return analysis, plan


def _budget(
    analysis: Any,
    plan: Any,
    args: argparse.Namespace,
    ui: UI,
    stages: list | None = None,
    blocks: dict | None = None,
) -> Any:
    """Print the planned student's size; refuse (without --yes) when it cannot fit."""
    from ..planning.estimate import estimate, human

    est = estimate(analysis, plan, stages=stages, blocks=blocks)
    if not ui.quiet or not est.fits or getattr(args, "plan_only", False):
        print(f"fxgrow: {est}", file=ui.stream)
    if not est.fits and not getattr(args, "yes", False) and not getattr(args, "plan_only", False):
        raise ResourceError(
            f"the student would need about {human(est.needed_bytes)} of memory to build, and "
            f"{human(est.available_bytes or 0)} is available; grow less (a smaller --factor, "
            f"--width or --blocks), or pass --yes to try anyway"
        )
    return est


def _deepen_budget(loaded: Loaded, args: argparse.Namespace, ui: UI, options: dict) -> None:
    """deepen's planned size: the same deepen on a meta copy of the model (nothing allocated);
    where that dry run cannot run on meta tensors, say so and go on."""
    from ..api import deepen
    from ..planning.estimate import human, measured, meta_copy

    try:
        with ui.step("planning on meta tensors"):
            student = deepen(
                meta_copy(loaded.model), tuple(x.to("meta") for x in loaded.inputs), **options
            )
    except Exception as e:
        if not ui.quiet:
            print(
                f"fxgrow: planned student: size unknown before building (the dry run on meta "
                f"tensors failed: {type(e).__name__}); growing it needs about "
                f"{human(_bytes(loaded.model))} more memory (a copy of the teacher) plus "
                f"the inserted layers",
                file=ui.stream,
            )
        return
    est = measured(loaded.model, student)
    if not ui.quiet or not est.fits:
        print(f"fxgrow: {est}", file=ui.stream)
    if not est.fits and not args.yes:
        raise ResourceError(
            f"the student would need about {human(est.needed_bytes)} of memory to build, and "
            f"{human(est.available_bytes or 0)} is available; insert less, or pass --yes to "
            f"try anyway"
        )


def _bytes(m: Any) -> int:
    seen = {id(t): t for t in [*m.parameters(), *m.buffers()]}
    return sum(t.numel() * t.element_size() for t in seen.values())


def _apply(analysis: Any, plan: Any, ui: UI) -> Any:
    """The library's widen on the analysis and plan already made (not made again), the
    student's verification left to ``_verify``."""
    from ..api import widen

    with ui.step("rewriting the graph") as s:
        student = widen(analysis, plan=plan, verify=False, as_graph=True)
        s["done"] = f"{_count_params(student):,} parameters"
    return student


def _widen(loaded: Loaded, args: argparse.Namespace, ui: UI):
    """(analysis, plan, student) for --factor / --width, the size checked before rewriting."""
    analysis, plan = _plan(loaded, args, ui)
    _budget(analysis, plan, args, ui)
    return analysis, plan, _apply(analysis, plan, ui)


def _verify(loaded: Loaded, student: Any, args: argparse.Namespace, ui: UI):
    """(comparison, tolerance, ok) by the library's verifier; a student that fails it is
    refused unless --no-verify.  --noise / --approximate: measured, reported, never refused."""
    from ..verify.verdict import judge

    inexact = bool(getattr(args, "noise", 0.0) or getattr(args, "approximate", False))
    with ui.step("verifying against the teacher") as s:
        verdict = judge(loaded.model, student, loaded.inputs, exact=not inexact)
        s["done"] = str(verdict.result)
    if verdict.error is not None and getattr(args, "verify", True):
        raise PreservationError(
            f"{verdict.error} (--no-verify writes the student anyway)"
        ) from verdict.error
    return verdict.result, verdict.tolerance, verdict.ok


def _check_output(args: argparse.Namespace, suffixes: tuple[str, ...]) -> None:
    """-o: the right suffix, an existing writable folder, not a folder itself -- checked before
    any work is done."""
    if not getattr(args, "output", None):
        return
    out = Path(args.output)
    if out.is_dir():
        raise SpecError(
            f"-o/--output {args.output!r} is a folder; give a file name such as "
            f"{out / ('student' + suffixes[0])}"
        )
    if out.suffix.lower() not in suffixes:
        names = (
            ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
        )
        raise SpecError(
            f"-o/--output must end in {names}, got {args.output!r}"
            + (f" (e.g. {out.with_suffix(suffixes[0])})" if out.name else "")
        )
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise SpecError(
            f"-o/--output: the folder {str(folder)!r} does not exist; create it "
            f"(mkdir -p {folder}) or write elsewhere"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError(f"-o/--output: the folder {str(folder)!r} is not writable; write elsewhere")
    if out.exists() and not os.access(out, os.W_OK):
        raise SpecError(f"-o/--output: {args.output!r} exists and is not writable")


def _save(student: Any, loaded: Loaded, args: argparse.Namespace, ui: UI) -> str | None:
    if not args.output:
        return None
    from ..io import save

    out = Path(args.output)
    _check_output(args, (".safetensors",))
    with ui.step(f"saving {out}") as s:
        save(student, out, example_inputs=loaded.inputs, teacher=loaded.model)
        s["done"] = f"{out.stat().st_size / 1e6:.1f} MB"
    return str(out)


def _frontend(gm: Any) -> str:
    from ..growth import frontend

    return frontend(gm)
