"""The command line's console: progress on stderr, plain-text tables, the growth report, and
one-line error messages.

Invariant: nothing here imports torch at module level (``fxgrow --help`` stays fast); results go
to stdout, progress and library noise to stderr."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .models import Loaded, _count_params, _describe_inputs

if TYPE_CHECKING:  # torch is imported when a command runs, not for --help
    from ..verify.verdict import Verdict

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
                    self.stream.write(
                        f"\r{self.FRAMES[k % len(self.FRAMES)]} {text} "
                        f"{time.perf_counter() - t0:.1f}s"
                    )
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
        return "  ".join(
            c.rjust(w) if a == "r" else c.center(w) if a == "c" else c.ljust(w)
            for c, w, a in zip(row, widths, align)
        ).rstrip()

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


# -- the report ------------------------------------------------------------------------------------------


def _new_modules(teacher_gm: Any, student: Any) -> list[str]:
    before = {n for n, _ in teacher_gm.named_modules()}
    new = [n for n, _ in student.named_modules() if n and n not in before]
    return [n for n in new if not any(n.startswith(p + ".") for p in new if p != n)]


def preservation(verdict: Verdict) -> dict[str, Any]:
    """The verifier's verdict as the ``preservation`` entry of the commands' JSON output."""
    return {
        "max_abs": verdict.result.max_abs,
        "max_rel": verdict.result.max_rel,
        "tolerance": verdict.tolerance,
        "ok": verdict.ok,
    }


def _report(
    loaded: Loaded,
    student: Any,
    verdict: Verdict,
    saved: str | None,
    changes: list,
    inserted: list[str],
    args: argparse.Namespace,
    teacher_gm: Any = None,
) -> None:
    n_t, n_s = _count_params(loaded.model), _count_params(student)
    result, tol, ok = verdict.result, verdict.tolerance, verdict.ok
    teacher_nodes = {n.name for n in teacher_gm.graph.nodes} if teacher_gm is not None else set()
    new_nodes = [
        n.name
        for n in student.graph.nodes
        if teacher_gm is not None and n.name not in teacher_nodes and n.op != "get_attr"
    ]
    if args.json:
        doc = {
            "model": loaded.label,
            "inputs": [list(x.shape) for x in loaded.inputs],
            "groups_changed": [
                {"group": c.group, "old": c.old_width, "new": c.new_width, "init": c.init}
                for c in changes
            ],
            "modules_inserted": inserted,
            "nodes_inserted": len(new_nodes),
            "parameters": {"before": n_t, "after": n_s},
            "preservation": preservation(verdict),
            "output": saved,
        }
        print(json.dumps(doc, indent=2))
        return
    print(f"{loaded.label}  (input {_describe_inputs(loaded.inputs)})")
    if changes:
        print(f"\n{len(changes)} channel groups widened:")
        fresh = (
            any(c.init != "replicate" for c in changes)
            or getattr(args, "init", "replicate") != "replicate"
        )
        print(
            table(
                ["group", "width", "", "new"] + (["init"] if fresh else []),
                [
                    [c.group, c.old_width, "→", c.new_width] + ([c.init] if fresh else [])
                    for c in changes
                ],
                "lrcrl"[: 5 if fresh else 4],
            )
        )
    if inserted:
        print(f"\ninserted ({len(new_nodes)} nodes):")
        for name in inserted:
            print(f"  + {name}")
    print()
    rows = [
        ["parameters", f"{n_t:,} → {n_s:,} ({n_s / max(n_t, 1):.2f}x)"],
        [
            "preservation",
            f"{result}  "
            + (
                "[not exact by design: --noise]"
                if getattr(args, "noise", 0.0)
                else "[not exact by design: --approximate]"
                if getattr(args, "approximate", False)
                else f"[{'ok' if ok else 'NOT OK'}: max rel err "
                f"{'<=' if ok else '>'} tolerance {tol:g}; the tolerance bounds the "
                f"relative error]"
            ),
        ],
        ["saved", saved or "not saved (give -o student.safetensors)"],
    ]
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


# -- errors and library noise -------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    from .advice import for_cli

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
