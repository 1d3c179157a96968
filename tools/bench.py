#!/usr/bin/env python
"""Regenerate docs/benchmarks.md: how fast fxgrow analyses and widens (a benchmark, not a test).

Measured in one run, on torchvision resnet50, densenet121 and mobilenet_v2 (random init, eval
mode, input 1x3x224x224):

a) analysis: ``fxgrow.analyze(model, x)`` (trace, shapes, channel groups) against Torch-Pruning's
   ``DependencyGraph().build_dependency(model, example_inputs=x)`` plus
   ``list(DG.get_all_groups())``.  Target: fxgrow / TP <= 0.1.
b) widening: ``fxgrow.widen(model, x, factor=2, verify=False)`` against copying the student's
   parameter and buffer bytes (``[t.clone() for t in parameters + buffers]``).  Target: <= 2x.
c) a lower bound: a bare ``torch.fx.symbolic_trace(model)``, timed in both comparisons.  fxgrow
   must trace the model on every cold call (its front end is fx; nothing is cached across
   calls), so a target cell whose trace alone exceeds it cannot be met with an fx front end.

Each timing is the median of ``--reps`` runs after ``--warmup`` runs; the sides of a comparison
are timed interleaved, with one torch thread by default (``--threads``).

    .venv/bin/python -m pip install torch-pruning     # only for this benchmark (extra "bench")
    .venv/bin/python tools/bench.py                   # -> docs/benchmarks.md
    .venv/bin/python tools/bench.py --models resnet50 --reps 3 --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxgrow

MODELS = ("resnet50", "densenet121", "mobilenet_v2")
INPUT = (1, 3, 224, 224)
ANALYSIS_TARGET = 0.1  # fxgrow analyze / Torch-Pruning dependency graph
WIDEN_TARGET = 2.0  # fxgrow widen / copying the student's bytes
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
STREAM_MARK = "<!-- streamed growth: tools/bench_stream.py -->"
COMMAND = "python tools/bench.py"


@dataclass
class Timing:
    median: float
    low: float
    high: float
    faulted_mb: float = 0.0  # median memory page-faulted in per call (minor faults x page size)

    def __str__(self) -> str:
        return f"{self.median:.3f}"

    def spread(self) -> str:
        return f"{self.low:.3f}–{self.high:.3f}"


def timeit_interleaved(fns: list[Callable[[], Any]], warmup: int, reps: int) -> list[Timing]:
    """Time ``fns`` interleaved (a b c, c b a, a b c, ...) so that all see the same machine
    load; each timed call starts after a garbage collection.  The minor page faults of each
    call are counted too: writing fresh memory costs a fault per page."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    faults: list[list[int]] = [[] for _ in fns]
    for r in range(reps):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            gc.collect()
            f0 = _minor_faults()
            t0 = time.perf_counter()
            result = fns[k]()
            times[k].append(time.perf_counter() - t0)
            faults[k].append(_minor_faults() - f0)
            del result
    page_mb = _PAGE / 2**20
    return [
        Timing(statistics.median(t), min(t), max(t), statistics.median(f) * page_mb)
        for t, f in zip(times, faults)
    ]


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _minor_faults() -> int:
    try:
        import resource
    except ImportError:  # not on this platform: no counts
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def build(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def tp_groups(tp: Any, model: torch.nn.Module, x: torch.Tensor) -> list:
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    return list(dg.get_all_groups())


def copy_bytes(student: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for t in (*student.parameters(), *student.buffers())]


def copy_into(dst: list[torch.Tensor], student: torch.nn.Module) -> None:
    """The same bytes written into memory this process already holds: no page faults."""
    for d, t in zip(dst, (*student.parameters(), *student.buffers())):
        d.copy_(t)


def fx_trace(model: torch.nn.Module) -> torch.fx.GraphModule:
    """The least any fx-based analysis does: a bare symbolic trace of the model."""
    return torch.fx.symbolic_trace(model)


@dataclass
class Row:
    model: str
    fx_groups: int
    tp_groups: int
    analyze: Timing
    tp: Timing
    params_before: int
    params_after: int
    student_mb: float
    widen: Timing
    copy: Timing
    trace_a: Timing  # bare fx trace, timed with the analysis comparison
    trace_w: Timing  # bare fx trace, timed with the widening comparison
    copy_held: Timing  # the copy into memory already held (no page faults)
    rewrite: Timing | None = None  # the rewrite step alone (analysis and plan done before)

    @property
    def analysis_ratio(self) -> float:
        return self.analyze.median / self.tp.median

    @property
    def analysis_bound(self) -> float:
        return self.trace_a.median / self.tp.median

    @property
    def widen_ratio(self) -> float:
        return self.widen.median / self.copy.median

    @property
    def widen_bound(self) -> float:
        return self.trace_w.median / self.copy.median


def _ok(ratio: float, target: float) -> str:
    return "yes" if ratio <= target else "**no**"


def _verdict(ratio: float, bound: float, target: float) -> str:
    """Met; or not met but within reach of an fx front end; or out of its reach."""
    if ratio <= target:
        return "met"
    if bound > target:
        return "not met; out of reach of any fx front end"
    return "not met; within reach"


def render(rows: list[Row], args: argparse.Namespace, tp_version: str, elapsed: float) -> str:
    today = datetime.date.today().isoformat()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    shape = "x".join(str(d) for d in INPUT)
    lines = [
        "# Benchmarks",
        "",
        f"A benchmark, not a test: timings depend on the machine and its load.  Models: "
        f"torchvision {', '.join(r.model for r in rows)}, random init (`torch.manual_seed(0)`), "
        f"eval mode, input {shape}, float32 on the CPU.  Every time is the median of "
        f"{args.reps} runs after {args.warmup} warm-up run(s), in seconds; the range is "
        f"min–max of those runs.  The sides of each comparison (and the bare fx trace that "
        f"bounds it) are timed interleaved (a b c, c b a, ...) so that all see the same "
        f"machine load; the ratio is of the medians, and the ratio of the minimums (the least "
        f"disturbed runs) is given beside it.",
        "",
        f"* Machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} "
        f"{platform.machine()}, load average {args.load} at the start of the run; "
        f"{torch.get_num_threads()} torch thread(s)"
        + (
            " (one thread keeps timings stable when other processes share the CPUs; it makes "
            "Torch-Pruning's forward pass slower than with all cores)"
            if torch.get_num_threads() == 1
            else ""
        )
        + ".",
        f"* Software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"Torch-Pruning {tp_version}.",
        f"* Date: {today}.  Whole run: {elapsed:.0f} s.",
        f"* Command: `{COMMAND} --reps {args.reps} --warmup {args.warmup} "
        f"--threads {args.threads}` (needs "
        "`pip install torch-pruning`, the `bench` extra).",
        "",
        "## Analysis: fxgrow vs Torch-Pruning",
        "",
        "fxgrow: `fxgrow.analyze(model, x)` (fx trace, shape propagation, channel groups).  "
        "Torch-Pruning: `tp.DependencyGraph().build_dependency(model, example_inputs=x)` then "
        "`list(DG.get_all_groups())`.  The two find different things (fxgrow: channel spaces "
        "that share one replication map, including fixed ones; Torch-Pruning: pruning groups "
        f"rooted at convolutions and linears), so the group counts differ.  fxgrow propagates "
        "shapes on meta tensors (no arithmetic); Torch-Pruning runs a real forward pass with "
        "autograd and walks its graph, so its time grows with the input size and the "
        f"ratio depends on it.  Target: ratio <= {ANALYSIS_TARGET:g}.",
        "",
        "fx trace: a bare `torch.fx.symbolic_trace(model)`, timed in the same interleaved runs.  "
        "fxgrow's analysis starts with such a trace (its front end is fx, and nothing is cached "
        "across calls), so `fx trace / TP` is a lower bound on `fxgrow / TP` for any "
        "implementation with an fx front end.",
        "",
        "| model | fxgrow groups | TP groups | fxgrow analyze (s) | range | TP graph + groups (s) "
        "| range | fx trace (s) | range | ratio fxgrow/TP | ratio of minimums | bound: fx trace/TP "
        "| trace share of analyze | target met |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.fx_groups} | {r.tp_groups} | {r.analyze} | "
            f"{r.analyze.spread()} | {r.tp} | {r.tp.spread()} | {r.trace_a} | "
            f"{r.trace_a.spread()} | {r.analysis_ratio:.2f} | "
            f"{r.analyze.low / r.tp.low:.2f} | {r.analysis_bound:.2f} | "
            f"{r.trace_a.median / r.analyze.median:.0%} | "
            f"{_ok(r.analysis_ratio, ANALYSIS_TARGET)} |"
        )
    met = sum(r.analysis_ratio <= ANALYSIS_TARGET for r in rows)
    lines += ["", f"Target ratio <= {ANALYSIS_TARGET:g} met for {met} of {len(rows)} models."]
    lines += [
        "",
        "## Widening: fxgrow vs copying the student's bytes",
        "",
        "fxgrow: `fxgrow.widen(model, x, factor=2, verify=False)` (the whole call: analysis, "
        "plan and rewrite).  Baseline: `[t.clone() for t in (*student.parameters(), "
        "*student.buffers())]`, the cost of merely writing the student's tensors once "
        "(on this kind of machine mostly page faults on fresh memory, so it varies with the "
        "allocator's state).  "
        f"Target: ratio <= {WIDEN_TARGET:g}.  fx trace: as above, timed in these interleaved "
        "runs; `widen` traces the model too, so `fx trace / copy` is a lower bound on "
        "`widen / copy` with an fx front end (a loose one: `widen` must also write the "
        "student's bytes, which is what the copy costs).",
        "",
        "| model | parameters before -> after | student MB | fxgrow widen (s) | range "
        "| copy (s) | range | fx trace (s) | range | ratio widen/copy | ratio of minimums "
        "| bound: fx trace/copy | MB faulted in: widen, copy | target met |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.params_before:,} -> {r.params_after:,} | "
            f"{r.student_mb:.0f} | {r.widen} | {r.widen.spread()} | {r.copy} | "
            f"{r.copy.spread()} | {r.trace_w} | {r.trace_w.spread()} | "
            f"{r.widen_ratio:.1f} | {r.widen.low / r.copy.low:.1f} | "
            f"{r.widen_bound:.1f} | {r.widen.faulted_mb:.0f}, {r.copy.faulted_mb:.0f} | "
            f"{_ok(r.widen_ratio, WIDEN_TARGET)} |"
        )
    met = sum(r.widen_ratio <= WIDEN_TARGET for r in rows)
    lines += [
        "",
        f"Target ratio <= {WIDEN_TARGET:g} met for {met} of {len(rows)} models.",
        "",
        "MB faulted in: the median memory per call that the kernel had to map in (minor "
        "page faults x page size).  The copy's time depends on it: when the allocator "
        "hands back memory the previous call freed, nothing faults and the copy runs at "
        "memory speed; when it maps fresh memory, every page faults and the copy is "
        "several times slower.  Which happens varies from process to process, so the "
        "widen/copy ratio of a model whose student is large (resnet50) varies with it.  "
        "The same bytes copied into tensors this process already holds (`dst.copy_(t)`, "
        "no page faults, timed in the same interleaved runs) show the copy's cost without "
        "them:",
        "",
        "| model | copy into held memory (s) | range | copy (s) | ratio widen / copy into "
        "held memory |",
        "|---|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {r.model} | {r.copy_held} | {r.copy_held.spread()} | {r.copy} | "
        f"{r.widen.median / r.copy_held.median:.1f} |"
        for r in rows
    ]
    if any(r.rewrite for r in rows):
        lines += [
            "",
            "Where the time of `widen` goes: the rewrite step alone "
            "(`fxgrow.rewrite.apply(analysis, plan)`, an internal function; analysis and plan "
            "made beforehand), timed in the same interleaved runs.  The rest of `widen` is "
            "the analysis of the table above.",
            "",
            "| model | rewrite only (s) | range | share of widen | ratio rewrite/copy |",
            "|---|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {r.model} | {r.rewrite} | {r.rewrite.spread()} | "
            f"{r.rewrite.median / r.widen.median:.0%} | "
            f"{r.rewrite.median / r.copy.median:.1f} |"
            for r in rows
            if r.rewrite
        ]
    lines += _conclusions(rows)
    lines.append("")
    return "\n".join(lines)


def _conclusions(rows: list[Row]) -> list[str]:
    """Every target cell: met, or not met and whether an fx front end could meet it at all."""
    lines = [
        "",
        "## Which targets are met, and which an fx front end can meet",
        "",
        "A cold call of fxgrow traces the model with torch.fx: the design mandates fx (with "
        "torch.export as the fallback for models fx cannot trace), and caching a result across "
        "calls would only hide the cost.  So the bare trace time is a lower bound on fxgrow's "
        "time, and a cell whose bound already exceeds the target is out of reach of any "
        "implementation with an fx front end, however fast the rest becomes.  Ratios are of "
        "medians; the bounds come from the same interleaved runs.",
        "",
        f"| model | analysis: fxgrow/TP (target <= {ANALYSIS_TARGET:g}) | bound: fx trace/TP "
        f"| analysis | widen: widen/copy (target <= {WIDEN_TARGET:g}) | bound: fx trace/copy "
        "| widen |",
        "|---|--:|--:|---|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.analysis_ratio:.2f} | {r.analysis_bound:.2f} | "
            f"{_verdict(r.analysis_ratio, r.analysis_bound, ANALYSIS_TARGET)} | "
            f"{r.widen_ratio:.1f} | {r.widen_bound:.1f} | "
            f"{_verdict(r.widen_ratio, r.widen_bound, WIDEN_TARGET)} |"
        )
    cells = [(r.analysis_ratio, r.analysis_bound, ANALYSIS_TARGET) for r in rows] + [
        (r.widen_ratio, r.widen_bound, WIDEN_TARGET) for r in rows
    ]
    met = sum(ratio <= target for ratio, _, target in cells)
    out = sum(ratio > target and bound > target for ratio, bound, target in cells)
    lines += [
        "",
        f"Of {len(cells)} target cells: {met} met, {out} out of reach of an fx front "
        f"end (its trace alone is over the target), "
        f"{len(cells) - met - out} not met but within reach.",
    ]
    reach = []
    for r in rows:
        if r.analysis_ratio > ANALYSIS_TARGET >= r.analysis_bound:
            reach.append(
                f"* {r.model}, analysis: {r.analyze.median * 1e3:.0f} ms, of which the "
                f"fx trace is {r.trace_a.median * 1e3:.0f} ms; the target is "
                f"{ANALYSIS_TARGET * r.tp.median * 1e3:.0f} ms, so the rest "
                f"(shapes, channel spaces, groups: "
                f"{(r.analyze.median - r.trace_a.median) * 1e3:.0f} ms) would have to "
                f"fit in {(ANALYSIS_TARGET * r.tp.median - r.trace_a.median) * 1e3:.0f}"
                f" ms."
            )
        if r.widen_ratio > WIDEN_TARGET >= r.widen_bound:
            reach.append(
                f"* {r.model}, widen: {r.widen.median * 1e3:.0f} ms against a copy of "
                f"{r.copy.median * 1e3:.0f} ms; `widen` must trace "
                f"({r.trace_w.median * 1e3:.0f} ms) and write the student's bytes "
                f"(about the copy), which already makes "
                f"{(r.trace_w.median + r.copy.median) / r.copy.median:.1f}x."
            )
        elif r.widen_ratio <= WIDEN_TARGET and r.copy.faulted_mb > 0.25 * r.student_mb:
            reach.append(
                f"* {r.model}, widen: met in this run, with the copy faulting in "
                f"{r.copy.faulted_mb:.0f} of its {r.student_mb:.0f} MB.  The same "
                f"bytes copied without page faults take "
                f"{r.copy_held.median * 1e3:.0f} ms; widen, which faulted in "
                f"{r.widen.faulted_mb:.0f} MB itself, takes "
                f"{r.widen.median / r.copy_held.median:.1f}x that.  Whether this cell "
                f"is met depends on the allocator's state as much as on fxgrow: in a "
                f"process where freed memory is handed back, neither faults and the "
                f"ratio is well above the target."
            )
    if reach:
        lines += [
            "",
            "Cells within reach, and met cells that depend on the machine's state:",
            "",
        ] + reach
    return lines


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated torchvision models (default {','.join(MODELS)})",
    )
    ap.add_argument("--reps", type=int, default=7, help="timed runs per measurement")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: multi-threaded kernels slow down "
        "erratically when other processes share the CPUs; 0 keeps torch's default)",
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    ap.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="markdown file to write (default docs/benchmarks.md)",
    )
    args = ap.parse_args(argv)
    try:
        import torch_pruning as tp
    except ImportError:
        print(
            "tools/bench.py: Torch-Pruning is not installed, so there is nothing to compare "
            "against; install it with `.venv/bin/python -m pip install torch-pruning` (the "
            "`bench` extra) and run again.  Nothing was measured.",
            file=sys.stderr,
        )
        return 0
    tp_version = getattr(tp, "__version__", "?")
    try:
        from importlib.metadata import version

        tp_version = version("torch-pruning")
    except Exception:
        pass

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.load = _load()
    try:  # internal: the rewrite step alone, to show what the analysis costs inside widen
        from fxgrow.rewrite import apply as rewrite_only
    except ImportError:
        rewrite_only = None
    t_start = time.perf_counter()
    rows: list[Row] = []
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for i, name in enumerate(names, 1):

        def log(msg: str) -> None:
            print(f"[{i}/{len(names)}] {name}: {msg}", file=sys.stderr, flush=True)

        model = build(name)
        x = torch.randn(*INPUT)

        log("fxgrow analyze ...")
        fx_groups = len(fxgrow.analyze(model, x).groups)
        n_tp = len(tp_groups(tp, model, x))
        analyze, tp_time, trace_a = timeit_interleaved(
            [
                lambda: fxgrow.analyze(model, x),
                lambda: tp_groups(tp, model, x),
                lambda: fx_trace(model),
            ],
            args.warmup,
            args.reps,
        )
        log(
            f"fxgrow analyze {analyze} s, Torch-Pruning {tp_time} s, fx trace {trace_a} s "
            f"(ratio {analyze.median / tp_time.median:.2f}, bound "
            f"{trace_a.median / tp_time.median:.2f}); fxgrow widen ..."
        )

        student = fxgrow.widen(model, x, factor=2, verify=False)
        held = copy_bytes(student)
        fns = [
            lambda: fxgrow.widen(model, x, factor=2, verify=False),
            lambda: copy_bytes(student),
            lambda: fx_trace(model),
            lambda: copy_into(held, student),
        ]
        if rewrite_only is not None:
            analysis = fxgrow.analyze(model, x)
            plan = fxgrow.plan(analysis, factor=2)
            fns.append(lambda: rewrite_only(analysis, plan))
        widen, copy, trace_w, copy_held, *rewrite = timeit_interleaved(fns, args.warmup, args.reps)
        del held
        nbytes = sum(
            t.numel() * t.element_size() for t in (*student.parameters(), *student.buffers())
        )
        log(
            f"widen {widen} s, copy {copy} s, fx trace {trace_w} s "
            f"(ratio {widen.median / copy.median:.1f}, bound "
            f"{trace_w.median / copy.median:.1f})"
        )
        rows.append(
            Row(
                name,
                fx_groups,
                n_tp,
                analyze,
                tp_time,
                sum(p.numel() for p in model.parameters()),
                sum(p.numel() for p in student.parameters()),
                nbytes / 2**20,
                widen,
                copy,
                trace_a,
                trace_w,
                copy_held,
                rewrite[0] if rewrite else None,
            )
        )
        del model, student
        gc.collect()

    elapsed = time.perf_counter() - t_start
    text = render(rows, args, tp_version, elapsed)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = out.read_text().partition(STREAM_MARK) if out.exists() else ("", "", "")
    if kept[1]:  # tools/bench_stream.py's section (written by hand from its output) stays
        text = text.rstrip("\n") + "\n\n" + STREAM_MARK + kept[2]
    out.write_text(text)
    print(f"wrote {out} ({elapsed:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
