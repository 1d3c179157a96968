#!/usr/bin/env python
"""Regenerate docs/benchmarks.md: how fast fxgrow analyses and widens (a benchmark, not a test).

Measured in one run, on torchvision resnet50, densenet121 and mobilenet_v2 (random init, eval
mode, input 1x3x224x224):

a) analysis: ``fxgrow.analyze(model, x)`` (trace, shapes, channel groups) against Torch-Pruning's
   ``DependencyGraph().build_dependency(model, example_inputs=x)`` plus
   ``list(DG.get_all_groups())``.  Target: fxgrow / TP <= 0.1.
b) widening: ``fxgrow.widen(model, x, factor=2, verify=False)`` against copying the student's
   parameter and buffer bytes (``[t.clone() for t in parameters + buffers]``).  Target: <= 2x.

Each timing is the median of ``--reps`` runs after ``--warmup`` runs; the two sides of a
comparison are timed interleaved, with one torch thread by default (``--threads``).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxgrow  # noqa: E402

MODELS = ("resnet50", "densenet121", "mobilenet_v2")
INPUT = (1, 3, 224, 224)
ANALYSIS_TARGET = 0.1  # fxgrow analyze / Torch-Pruning dependency graph
WIDEN_TARGET = 2.0  # fxgrow widen / copying the student's bytes
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
COMMAND = "python tools/bench.py"


@dataclass
class Timing:
    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.3f}"

    def spread(self) -> str:
        return f"{self.low:.3f}–{self.high:.3f}"


def timeit_interleaved(fns: list[Callable[[], Any]], warmup: int,
                       reps: int) -> list[Timing]:
    """Time ``fns`` interleaved (a b c, c b a, a b c, ...) so that all see the same machine
    load; each timed call starts after a garbage collection."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(reps):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            gc.collect()
            t0 = time.perf_counter()
            result = fns[k]()
            times[k].append(time.perf_counter() - t0)
            del result
    return [Timing(statistics.median(t), min(t), max(t)) for t in times]


def build(name: str) -> torch.nn.Module:
    import torchvision
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def tp_groups(tp: Any, model: torch.nn.Module, x: torch.Tensor) -> list:
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
    return list(dg.get_all_groups())


def copy_bytes(student: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for t in (*student.parameters(), *student.buffers())]


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
    rewrite: Timing | None = None  # the rewrite step alone (analysis and plan done before)


def _ok(ratio: float, target: float) -> str:
    return "yes" if ratio <= target else "**no**"


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
        f"min–max of those runs.  The two sides of each comparison are timed interleaved "
        f"(a b, b a, ...) so that both see the same machine load; the ratio is of the "
        f"medians, and the ratio of the minimums (the least disturbed runs) is given beside "
        f"it.",
        "",
        f"* Machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} "
        f"{platform.machine()}, load average {args.load} at the start of the run; "
        f"{torch.get_num_threads()} torch thread(s)"
        + (" (one thread keeps timings stable when other processes share the CPUs; it makes "
           "Torch-Pruning's forward pass slower than with all cores)"
           if torch.get_num_threads() == 1 else "") + ".",
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
        "| model | fxgrow groups | TP groups | fxgrow analyze (s) | range | TP graph + groups (s) "
        "| range | ratio fxgrow/TP | ratio of minimums | target met |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        ratio = r.analyze.median / r.tp.median
        lines.append(f"| {r.model} | {r.fx_groups} | {r.tp_groups} | {r.analyze} | "
                     f"{r.analyze.spread()} | {r.tp} | {r.tp.spread()} | {ratio:.2f} | "
                     f"{r.analyze.low / r.tp.low:.2f} | "
                     f"{_ok(ratio, ANALYSIS_TARGET)} |")
    met = sum(r.analyze.median / r.tp.median <= ANALYSIS_TARGET for r in rows)
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
        f"Target: ratio <= {WIDEN_TARGET:g}.",
        "",
        "| model | parameters before -> after | student MB | fxgrow widen (s) | range "
        "| copy (s) | range | ratio widen/copy | ratio of minimums | target met |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        ratio = r.widen.median / r.copy.median
        lines.append(f"| {r.model} | {r.params_before:,} -> {r.params_after:,} | "
                     f"{r.student_mb:.0f} | {r.widen} | {r.widen.spread()} | {r.copy} | "
                     f"{r.copy.spread()} | {ratio:.1f} | {r.widen.low / r.copy.low:.1f} | "
                     f"{_ok(ratio, WIDEN_TARGET)} |")
    met = sum(r.widen.median / r.copy.median <= WIDEN_TARGET for r in rows)
    lines += ["", f"Target ratio <= {WIDEN_TARGET:g} met for {met} of {len(rows)} models."]
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
        lines += [f"| {r.model} | {r.rewrite} | {r.rewrite.spread()} | "
                  f"{r.rewrite.median / r.widen.median:.0%} | "
                  f"{r.rewrite.median / r.copy.median:.1f} |" for r in rows if r.rewrite]
    lines.append("")
    return "\n".join(lines)


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated torchvision models (default {','.join(MODELS)})")
    ap.add_argument("--reps", type=int, default=7, help="timed runs per measurement")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: multi-threaded kernels slow down "
                    "erratically when other processes share the CPUs; 0 keeps torch's default)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file to write "
                    "(default docs/benchmarks.md)")
    args = ap.parse_args(argv)
    try:
        import torch_pruning as tp
    except ImportError:
        print("tools/bench.py: Torch-Pruning is not installed, so there is nothing to compare "
              "against; install it with `.venv/bin/python -m pip install torch-pruning` (the "
              "`bench` extra) and run again.  Nothing was measured.", file=sys.stderr)
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
        analyze, tp_time = timeit_interleaved(
            [lambda: fxgrow.analyze(model, x), lambda: tp_groups(tp, model, x)],
            args.warmup, args.reps)
        log(f"fxgrow analyze {analyze} s, Torch-Pruning {tp_time} s "
            f"(ratio {analyze.median / tp_time.median:.2f}); fxgrow widen ...")

        student = fxgrow.widen(model, x, factor=2, verify=False)
        fns = [lambda: fxgrow.widen(model, x, factor=2, verify=False),
               lambda: copy_bytes(student)]
        if rewrite_only is not None:
            analysis = fxgrow.analyze(model, x)
            plan = fxgrow.plan(analysis, factor=2)
            fns.append(lambda: rewrite_only(analysis, plan))
        widen, copy, *rewrite = timeit_interleaved(fns, args.warmup, args.reps)
        nbytes = sum(t.numel() * t.element_size()
                     for t in (*student.parameters(), *student.buffers()))
        log(f"widen {widen} s, copy {copy} s (ratio {widen.median / copy.median:.1f})")
        rows.append(Row(name, fx_groups, n_tp, analyze, tp_time,
                        sum(p.numel() for p in model.parameters()),
                        sum(p.numel() for p in student.parameters()), nbytes / 2**20,
                        widen, copy, rewrite[0] if rewrite else None))
        del model, student
        gc.collect()

    elapsed = time.perf_counter() - t_start
    text = render(rows, args, tp_version, elapsed)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({elapsed:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
