"""How fast the command line starts: ``fxgrow --help``, ``fxgrow --version``, ``import fxgrow``
and the first use of ``fxgrow.widen`` (which imports torch), each run in a fresh interpreter.

    .venv/bin/python tools/bench_cli_start.py [--runs 5]

Prints the median and the fastest of ``--runs`` wall-clock times per command (seconds) and
the machine's load average, as a markdown table for docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
COMMANDS = {
    "fxgrow --help": [PY, "-m", "fxgrow.cli", "--help"],
    "fxgrow --version": [PY, "-m", "fxgrow.cli", "--version"],
    "python -c 'import fxgrow'": [PY, "-c", "import fxgrow"],
    "python -c 'import fxgrow; fxgrow.widen'": [PY, "-c", "import fxgrow; fxgrow.widen"],
    "python -c 'import torch'": [PY, "-c", "import torch"],
}


def time_once(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs; {args.runs} runs each\n")
    print("| command | median (s) | fastest (s) |\n|---|---|---|")
    for label, cmd in COMMANDS.items():
        times = [time_once(cmd) for _ in range(args.runs)]
        print(f"| `{label}` | {statistics.median(times):.2f} | {min(times):.2f} |", flush=True)


if __name__ == "__main__":
    main()
