"""The ``fxgrow`` command line."""
from __future__ import annotations

import argparse
import sys

from .errors import FxgrowError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxgrow", description="Grow PyTorch models exactly "
                                     "(Net2Net as torch.fx graph rewrites).")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="widen a torchvision ResNet-18 and show the result")
    demo.add_argument("--factor", type=float, default=1.5)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run
            return run(args.factor, args.seed)
    except FxgrowError as e:
        print(f"fxgrow: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
