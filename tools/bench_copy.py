#!/usr/bin/env python
"""Is the hand-written module copier worth keeping?  (A benchmark, not a test.)

``fxgrow.rewrite.widen.apply`` builds the student as ``copy.deepcopy`` of the graph module with
the widened tensors in the memo, and copies its module tree first with ``_copy``, a
hand-written ``copy.deepcopy`` for module trees.  This times each step both ways, on torchvision
resnet50, densenet121 and mobilenet_v2 (random init, eval mode, input 1x3x224x224) and a small
Hugging Face ``LlamaForCausalLM`` built from a config (random init, 1x16 token ids):

* tree: the graph module's submodules copied into the memo (``_copy`` / ``copy.deepcopy``);
* copy step: what ``apply`` copies, the tree and then ``copy.deepcopy(gm, memo)`` (which adds
  the graph, its attributes and a recompile), against ``copy.deepcopy(gm, memo)`` alone;
* apply: ``fxgrow.rewrite.widen.apply(analysis, plan)``, with ``_copy`` as it is and with
  ``copy.deepcopy`` in its place;
* widen: ``fxgrow.widen(analysis, factor=2, verify=False)`` both ways (analysis made before;
  for the Llama model the call returns a ``LlamaForCausalLM``).

The memo of the copy steps holds the student's widened tensors, made once the way ``apply``
makes them.  Both sides of each comparison run interleaved (a b, b a, ...), each timed call
after a garbage collection; times are medians in ms, with the ratio of the medians and of the
minimums (the least disturbed runs).  One torch thread by default.  Before timing, the two
copies are checked to give the same parameters and buffers (names, shapes, values).

    .venv/bin/python tools/bench_copy.py                  # markdown tables on stdout
    .venv/bin/python tools/bench_copy.py --models llama --reps 5
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxgrow
import fxgrow.rewrite.widen as widen_module
from fxgrow.rewrite.recipe import Scratch, apply_recipe, tensor_recipes

MODELS = ("resnet50", "densenet121", "mobilenet_v2", "llama")
LLAMA: dict[str, Any] = dict(  # small, but with every part of a Llama block
    vocab_size=1000,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=128,
)
STEPS = ("tree", "copy step", "apply", "widen")
HAND_COPY = widen_module._copy


@dataclass(frozen=True)
class Timing:
    median: float
    low: float
    high: float


@dataclass(frozen=True)
class Row:
    model: str
    student_params: int
    modules: int  # modules in the teacher's graph module (itself included)
    hand: tuple[Timing, ...]  # per step in STEPS: with _copy
    plain: tuple[Timing, ...]  # per step in STEPS: with copy.deepcopy


def timeit_pair(a: Callable[[], Any], b: Callable[[], Any], warmup: int, reps: int):
    """``a`` and ``b`` timed interleaved (a b, b a, ...), each call after a collection."""
    for _ in range(warmup):
        a()
        b()
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(reps):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            gc.collect()
            t0 = time.perf_counter()
            result = (a, b)[k]()
            times[k].append(time.perf_counter() - t0)
            del result
    return tuple(Timing(statistics.median(t), min(t), max(t)) for t in times)


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "llama":
        import transformers

        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
        return model, torch.randint(0, LLAMA["vocab_size"], (1, 16))
    import torchvision

    return torchvision.models.get_model(name, weights=None).eval(), torch.randn(1, 3, 224, 224)


def widened_memo(analysis: fxgrow.Analysis, plan: fxgrow.WidenPlan) -> dict[int, Any]:
    """The memo ``apply`` copies with: teacher tensor id -> the student's widened tensor."""
    recipes = tensor_recipes(analysis, plan)
    jobs = [(analysis.state.tensors[target], recipe) for target, recipe in recipes.items()]
    scratch = Scratch(jobs)
    memo: dict[int, Any] = {}
    for old, recipe in jobs:
        new = apply_recipe(recipe, old, scratch=scratch, noise=None)
        if isinstance(old, torch.nn.Parameter):
            new = torch.nn.Parameter(new, requires_grad=old.requires_grad)
        memo[id(old)] = new
    return memo


@contextlib.contextmanager
def copier(fn: Callable[[Any, dict], Any]) -> Iterator[None]:
    """``apply`` copies its module tree with ``fn`` inside the block."""
    widen_module._copy = fn  # type: ignore[assignment]
    try:
        yield
    finally:
        widen_module._copy = HAND_COPY


def with_copier(fn: Callable[[Any, dict], Any], call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with copier(fn):
            return call()

    return run


def tree(gm: torch.fx.GraphModule, base: dict, fn: Callable[[Any, dict], Any]) -> dict:
    memo = dict(base)
    for child in gm._modules.values():
        fn(child, memo)
    return memo


def copy_step(gm: torch.fx.GraphModule, base: dict, hand: bool) -> torch.fx.GraphModule:
    memo = tree(gm, base, HAND_COPY) if hand else dict(base)
    return copy.deepcopy(gm, memo)


def same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Both copies hold the same parameters and buffers; else the timing means nothing."""
    ta = dict([*a.named_parameters(), *a.named_buffers()])
    tb = dict([*b.named_parameters(), *b.named_buffers()])
    if ta.keys() != tb.keys() or any(not torch.equal(ta[k], tb[k]) for k in ta):
        raise SystemExit("tools/bench_copy.py: _copy and copy.deepcopy give different students")


def measure(name: str, warmup: int, reps: int, log: Callable[[str], None]) -> Row:
    model, x = build(name)
    analysis = fxgrow.analyze(model, x)
    plan = fxgrow.plan(analysis, factor=2)
    gm = analysis.gm
    base = widened_memo(analysis, plan)
    same_tensors(copy_step(gm, base, True), copy_step(gm, base, False))
    with copier(copy.deepcopy):
        plain_student = widen_module.apply(analysis, plan)
    same_tensors(widen_module.apply(analysis, plan), plain_student)
    del plain_student

    def widen() -> torch.nn.Module:
        return fxgrow.widen(analysis, factor=2, verify=False)

    pairs = {
        "tree": (lambda: tree(gm, base, HAND_COPY), lambda: tree(gm, base, copy.deepcopy)),
        "copy step": (lambda: copy_step(gm, base, True), lambda: copy_step(gm, base, False)),
        "apply": (
            lambda: widen_module.apply(analysis, plan),
            with_copier(copy.deepcopy, lambda: widen_module.apply(analysis, plan)),
        ),
        "widen": (widen, with_copier(copy.deepcopy, widen)),
    }
    hand, plain = [], []
    for step in STEPS:
        h, p = timeit_pair(*pairs[step], warmup, reps)
        log(f"{step}: _copy {h.median * 1e3:.1f} ms, deepcopy {p.median * 1e3:.1f} ms")
        hand.append(h)
        plain.append(p)
    student = widen_module.apply(analysis, plan)
    return Row(
        name,
        sum(p.numel() for p in student.parameters()),
        len(list(gm.modules())),
        tuple(hand),
        tuple(plain),
    )


def _ms(t: Timing) -> str:
    return f"{t.median * 1e3:.1f}"


def _range(t: Timing) -> str:
    return f"{t.low * 1e3:.1f}–{t.high * 1e3:.1f}"


def render(rows: list[Row], args: argparse.Namespace, load_end: str, elapsed: float) -> str:
    lines = [
        f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}; load "
        f"average {args.load} at the start, {load_end} at the end; "
        f"{torch.get_num_threads()} torch thread(s).  Python {platform.python_version()}, "
        f"torch {torch.__version__}.  Median of {args.reps} runs after {args.warmup} warm-up "
        f"run(s), in ms; whole run {elapsed:.0f} s.",
        "",
        "| model | student parameters | modules | step | `_copy` (ms) | range "
        "| `copy.deepcopy` (ms) | range | deepcopy / `_copy` | ratio of minimums |",
        "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        for step, h, p in zip(STEPS, r.hand, r.plain):
            lines.append(
                f"| {r.model} | {r.student_params:,} | {r.modules} | {step} | {_ms(h)} | "
                f"{_range(h)} | {_ms(p)} | {_range(p)} | {p.median / h.median:.2f} | "
                f"{p.low / h.low:.2f} |"
            )
    return "\n".join(lines) + "\n"


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, of " + ",".join(MODELS)
    )
    ap.add_argument("--reps", type=int, default=9, help="timed runs per side")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per side before them")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.load = _load()
    t_start = time.perf_counter()
    rows = []
    for i, name in enumerate(names, 1):

        def log(msg: str) -> None:
            print(f"[{i}/{len(names)}] {name}: {msg}", file=sys.stderr, flush=True)

        rows.append(measure(name, args.warmup, args.reps, log))
        gc.collect()
    print(render(rows, args, _load(), time.perf_counter() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
