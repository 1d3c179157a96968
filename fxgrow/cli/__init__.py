"""The ``fxgrow`` command line: inspect, widen, deepen, grow and draw models.

Exit status: 0 success; 2 a user error (bad model spec, input shape, width or name; a model fxgrow
cannot capture; a group that cannot widen; a saved file fxgrow refuses; a student that would not
fit in memory; the machine's state: out of memory, a file that cannot be written), printed as one
line; 1 an internal error (including a student that fails verification, which is a bug in
fxgrow).  Everything that can be checked before work starts (options, -o, --student) is."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

from ..errors import FxgrowError, PreservationError
from .commands import (  # noqa: F401
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USER,
    cmd_deepen,
    cmd_draw,
    cmd_grow,
    cmd_inspect,
    cmd_widen,
)
from .console import UI, _library_noise_hidden, _new_modules, _one_line, _report, table  # noqa: F401
from .models import (  # noqa: F401
    LARGE,
    Loaded,
    SpecError,
    _close,
    _count_params,
    _describe_inputs,
    _short,
    _split_spec,
    _value,
    load_model,
)
from .parser import MODEL_HELP, build_parser  # noqa: F401
from .steps import (  # noqa: F401
    ResourceError,
    _analyse,
    _apply,
    _assignments,
    _budget,
    _check_factor,
    _check_output,
    _load,
    _plan,
    _save,
    _trace_options,
    _verify,
    _widen,
)


def main(argv: list[str] | None = None) -> int:
    """Run the ``fxgrow`` command line and return its exit status: 0 done, 1 a failed
    preservation check or a bug, 2 a user error (bad input, out of memory, the OS); an error
    is one line on stderr (a bug's traceback only with ``--traceback``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ui = UI(quiet=getattr(args, "quiet", False))
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
        print(
            "fxgrow: error: out of memory; grow less (a smaller --factor, --width or "
            "--blocks) or use smaller example inputs (--input-shape)",
            file=sys.stderr,
        )
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
        print(
            f"fxgrow: internal error: {type(e).__name__}: {_short(e, 300)} (this is a bug in "
            f"fxgrow; rerun with --traceback for details and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
