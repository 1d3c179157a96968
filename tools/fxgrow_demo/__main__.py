"""``python -m fxgrow_demo [--factor F] [--seed S] [--out-dir DIR] ...``: the demo's command line
(what ``bash tools/demo.sh`` runs)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fxgrow_demo",
        description="The fxgrow demo: a small ResNet trains on scikit-learn's digits, fxgrow "
        "grows it wider and deeper exactly, training continues; compared with the "
        "same architecture trained from scratch.",
    )
    p.add_argument("--factor", type=float, default=1.5, help="width factor (default 1.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", help="where the plot, drawing and student go")
    p.add_argument("--teacher-steps", type=int, help="training steps before growth")
    p.add_argument("--student-steps", type=int, help="training steps after growth")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .demo import run

    extra = {
        "out_dir": args.out_dir,
        "teacher_steps": args.teacher_steps,
        "student_steps": args.student_steps,
        "threads": args.threads,
        "progress": False if args.quiet else None,
    }
    return run(args.factor, args.seed, **{k: v for k, v in extra.items() if v is not None})


if __name__ == "__main__":
    sys.exit(main())
