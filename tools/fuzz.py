#!/usr/bin/env python
"""Fuzz fxgrow over random architectures (the nightly run; CI runs tests/test_fuzz.py).

    .venv/bin/python tools/fuzz.py                  # 1000 derandomized examples, up to 12 ops
    .venv/bin/python tools/fuzz.py -n 2000 --seed 7 # another stream of examples
    .venv/bin/python tools/fuzz.py --json out.json  # also write the summary as JSON

Every example is a random program (tests/fuzz/archs.py) built as an nn.Module and checked by
tests/fuzz/check.py: widen by a random factor, widen one random group to a random width,
widen with growing outputs, widen every group on its own, deepen (identity after a ReLU and
after a random node, residual after a random node), and the numerical symmetry probe of the
analysis.  Each call must give an exact student or a FxgrowError naming a node.

The survey runs every example without stopping; if anything failed, hypothesis then shrinks the
first failure to a minimal program, printed as Python to paste into tests/regressions/.
Exit status: 0 when no example failed."""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

import torch
from fuzz.archs import programs
from fuzz.check import check_program
from fuzz.profiles import DTYPES, NIGHTLY, NIGHTLY_STEPS
from hypothesis import Phase, given, settings
from hypothesis import seed as hypothesis_seed


def survey(n: int, steps: int, seed: int | None) -> dict:
    stats: collections.Counter = collections.Counter()
    ops: collections.Counter = collections.Counter()
    failures: list = []
    notes: collections.Counter = collections.Counter()
    outcomes: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()

    @settings(NIGHTLY, max_examples=n, phases=[Phase.generate], derandomize=seed is None)
    @given(programs(max_steps=steps, dtypes=DTYPES))
    def run(program):
        t = time.perf_counter()
        report = check_program(program)
        stats["seconds_checking"] += time.perf_counter() - t
        stats["examples"] += 1
        stats[f"dtype {program.dtype}"] += 1
        stats["exact students"] += report.exact
        stats["named refusals"] += report.refused
        stats["probed"] += report.probed
        for s in program.steps:
            ops[s.op] += 1
        for f in report.failures:
            failures.append((program, f))
        for key, v in report.outcomes.items():
            outcomes[key] += v
        for call, message in report.refusals:
            reasons[(call, reason(message))] += 1
        for f in report.notes:
            notes[f.detail.split(" of shape")[0]] += 1
        if stats["examples"] % 50 == 0:
            print(f"  {stats['examples']} examples, {len(failures)} failures", flush=True)

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    run()
    return {
        "stats": stats,
        "ops": ops,
        "failures": failures,
        "notes": notes,
        "outcomes": outcomes,
        "reasons": reasons,
    }


def reason(message: str) -> str:
    """A refusal message without its names and numbers: 'BlockedGroupError: group ... ' -> a
    kind of reason that can be counted."""
    m = re.sub(r"'[^']*'", "'…'", message.splitlines()[0])
    m = re.sub(r"\b\d+(\.\d+)?\b", "N", m)
    m = re.sub(r"\([^()]*\)", "(…)", m)
    return m[:150]


def shrink(kind: str, steps: int, seed: int | None):
    """Let hypothesis find and shrink an example failing with ``kind``; the minimal program."""
    found: list = []

    @settings(
        NIGHTLY,
        max_examples=NIGHTLY.max_examples,
        derandomize=seed is None,
        phases=[Phase.generate, Phase.shrink],
    )
    @given(programs(max_steps=steps, dtypes=DTYPES))
    def run(program):
        report = check_program(program)
        bad = [f for f in report.failures if f.kind == kind]
        if bad:
            found.append((program, bad[0]))
            raise AssertionError(str(bad[0]))

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    try:
        run()
    except AssertionError:
        pass
    return found[-1] if found else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--examples", type=int, default=NIGHTLY.max_examples)
    ap.add_argument("--steps", type=int, default=NIGHTLY_STEPS, help="most ops per program")
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help="hypothesis seed (default: derandomized, the same examples every run)",
    )
    ap.add_argument("--no-shrink", action="store_true")
    ap.add_argument("--reasons", type=int, default=15, help="refusal reasons to list")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the models are tiny, and on a busy machine "
        "OpenMP threads waiting for each other slow every op down)",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    print(
        f"fxgrow fuzz: {args.examples} examples, up to {args.steps} ops each, "
        f"{'seed ' + str(args.seed) if args.seed is not None else 'derandomized'}; "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    start = time.perf_counter()
    result = survey(args.examples, args.steps, args.seed)
    elapsed = time.perf_counter() - start
    stats, failures = result["stats"], result["failures"]

    print(
        f"\nexamples run:        {stats['examples']} in {elapsed:.1f} s "
        f"({elapsed / max(stats['examples'], 1):.2f} s per example)"
    )
    print(f"exact students:      {stats['exact students']}")
    print(f"named refusals:      {stats['named refusals']}")
    print(f"symmetry probes:     {stats['probed']}")
    print(
        "dtypes:              "
        + ", ".join(f"{k[6:]} {v}" for k, v in stats.items() if k.startswith("dtype "))
    )
    print("ops drawn:           " + ", ".join(f"{k} {v}" for k, v in result["ops"].most_common()))
    per_call: dict = {}
    for (call, outcome), v in result["outcomes"].items():
        per_call.setdefault(call, collections.Counter())[outcome] += v
    print("per call:")
    for call, c in sorted(per_call.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"  {call:<38} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    print("most common refusals:")
    for (call, why), v in result["reasons"].most_common(args.reasons):
        print(f"  {v:>5} x {call}: {why}")
    kinds = collections.Counter(f.kind for _, f in failures)
    print(
        f"failures:            {len(failures)} "
        + (
            f"({', '.join(f'{k} {v}' for k, v in kinds.items())})"
            if failures
            else "(no wrong student, no non-fxgrow exception)"
        )
    )
    if result["notes"]:
        print("known message notes: " + "; ".join(f"{v} x {k}" for k, v in result["notes"].items()))

    seen = set()
    for program, f in failures:
        key = (f.kind, f.action.split()[0], f.detail[:50])
        if key in seen:
            continue
        seen.add(key)
        print("\n" + "=" * 88 + f"\n{f}\n{program.describe()}\n{program!r}")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "examples": stats["examples"],
                    "seconds": round(elapsed, 1),
                    "exact_students": stats["exact students"],
                    "named_refusals": stats["named refusals"],
                    "failures": [
                        {"kind": f.kind, "action": f.action, "detail": f.detail, "program": repr(p)}
                        for p, f in failures
                    ],
                    "ops": dict(result["ops"]),
                    "notes": dict(result["notes"]),
                    "per_call": {k: dict(v) for k, v in per_call.items()},
                    "refusals": [[c, w, v] for (c, w), v in result["reasons"].most_common()],
                    "seed": args.seed,
                    "max_steps": args.steps,
                    "torch": torch.__version__,
                },
                fh,
                indent=1,
            )
    shrunk = None
    if failures and not args.no_shrink:
        kind = failures[0][1].kind
        print(f"\nshrinking the first '{kind}' failure ...", flush=True)
        shrunk = shrink(kind, args.steps, args.seed)
        if shrunk:
            program, f = shrunk
            print(f"minimal program:\n{f}\n{program.describe()}\n{program!r}")

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
