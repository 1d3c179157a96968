"""Command-line parts of the growth recipes: ``inspect --rank`` and ``grow-kernel``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # torch is imported when a command runs, not for --help
    import torch
    from torch.nn.modules.conv import _ConvNd


def synthetic_loss(seed: int):
    """Cross-entropy of the model's first output against random labels (class axis: last for
    3-d outputs such as token logits, 1 otherwise; mean of squares for 1-d outputs).  The CLI
    has no data: this only says which groups' new units would get gradient at all, and how
    much; ``fxgrow.rank_groups`` with a real batch and loss is what decisions should use."""
    import torch
    import torch.nn.functional as F

    labels: dict[tuple, torch.Tensor] = {}

    def loss_fn(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        out = model(*batch)
        out = next(
            o
            for o in torch.utils._pytree.tree_leaves(out)
            if isinstance(o, torch.Tensor) and o.is_floating_point()
        )
        if out.dim() < 2:
            return out.pow(2).mean()
        logits = out.movedim(-1 if out.dim() == 3 else 1, -1).reshape(
            -1, out.shape[-1 if out.dim() == 3 else 1]
        )
        key = tuple(logits.shape)
        if key not in labels:
            gen = torch.Generator().manual_seed(seed)
            labels[key] = torch.randint(0, logits.shape[1], (logits.shape[0],), generator=gen)
        return F.cross_entropy(logits.float(), labels[key])

    return loss_fn


def check_init_flag(args: argparse.Namespace) -> None:
    """``--init``: "zero" is planned per group (normalised groups replicate); "gradmax" is
    refused, since the CLI has no training batch or loss to take the gradients of (random
    labels would choose directions from noise)."""
    init = getattr(args, "init", "replicate")
    if init == "replicate":
        return
    from .models import SpecError

    if init == "gradmax":
        raise SpecError(
            "--init gradmax needs a training batch and a loss, which the command "
            "line does not have: use --init zero here, or from Python "
            'fxgrow.widen(model, x, factor=F, init="gradmax", loss_fn=lambda m, b: '
            "..., batch=b)"
        )
    from ..hf.folder import is_folder

    if is_folder(args.model):
        raise SpecError(
            f"--init {init} is not available for Hugging Face folders yet: drop "
            f"--init, or grow the model from Python with fxgrow.grow(..., "
            f"init={init!r})"
        )


def print_rank(loaded: Any, args: argparse.Namespace) -> None:
    """The groups ranked by ``fxgrow.rank_groups`` on the example inputs (see
    ``synthetic_loss``)."""
    from ..planning.ranking import rank_groups
    from .console import table

    scores = rank_groups(
        loaded.model, loaded.inputs, synthetic_loss(args.seed), loaded.inputs, seed=args.seed
    )
    if args.json:
        print(
            json.dumps(
                {
                    "rank": [
                        {
                            "group": s.group,
                            "width": s.width,
                            "new_units": s.new_units,
                            "score": s.score,
                            "why": s.why,
                        }
                        for s in scores
                    ]
                },
                indent=2,
            )
        )
        return
    print(
        "\ngroups ranked by the gradient new units would get (fresh fan-in, zero fan-out, "
        "x2; synthetic batch: the example inputs and random labels):"
    )
    print(
        table(
            ["rank", "group", "width", "score", "note"],
            [
                [
                    i + 1 if s.score is not None else "-",
                    s.group,
                    s.width,
                    "-" if s.score is None else f"{s.score:.3g}",
                    s.why[:60],
                ]
                for i, s in enumerate(scores)
            ],
            "rlrrl",
        )
    )


def cmd_grow_kernel(args: argparse.Namespace, ui: Any) -> int:
    """``fxgrow grow-kernel``: enlarge named convolutions' kernels (zero taps), verify, save."""
    from ..api import capture
    from ..rewrite.kernel import grow_kernel
    from .commands import EXIT_OK
    from .models import SpecError, _count_params
    from .steps import _assignments, _load, _save, _trace_options, _verify

    sizes = _assignments(args.kernel, "--kernel", "layer1.0.conv1=5")
    if not sizes:
        raise SpecError("say which convolutions grow: --kernel MODULE=SIZE (e.g. layer1.0.conv1=5)")
    loaded = _load(args, ui)
    with ui.step("tracing") as s:
        teacher = capture(loaded.model, loaded.inputs, **_trace_options(args))
        s["done"] = f"{len(teacher.graph.nodes)} nodes"
    with ui.step(f"growing {len(sizes)} kernels") as s:
        student = grow_kernel(teacher, loaded.inputs, sizes, verify=False)
        s["done"] = f"{_count_params(student):,} parameters"
    result, tol, ok = _verify(loaded, student, args, ui)
    saved = _save(student, loaded, args, ui)
    # grow_kernel grew exactly these convolutions
    convs = {name: cast("_ConvNd", student.get_submodule(name)) for name in sizes}
    rows = {name: list(conv.kernel_size) for name, conv in convs.items()}
    if args.json:
        print(
            json.dumps(
                {
                    "model": loaded.label,
                    "kernels": rows,
                    "parameters": {
                        "before": _count_params(loaded.model),
                        "after": _count_params(student),
                    },
                    "preservation": {
                        "max_abs": result.max_abs,
                        "max_rel": result.max_rel,
                        "tolerance": tol,
                        "ok": ok,
                    },
                    "output": saved,
                },
                indent=2,
            )
        )
        return EXIT_OK
    for name, k in rows.items():
        print(f"  {name}: kernel {tuple(k)}")
    print(f"preservation: {result} [{'ok' if ok else 'NOT OK'}, tolerance {tol:g}]")
    print(f"saved: {saved or 'not saved (give -o student.safetensors)'}")
    return EXIT_OK


def add_grow_kernel_parser(sub: Any, common, results, fmt, model_help: str) -> None:
    """Add the ``grow-kernel`` subcommand to ``sub``, with the shared option groups."""
    p = sub.add_parser(
        "grow-kernel",
        formatter_class=fmt,
        help="enlarge convolution kernels exactly (zero taps, wider padding)",
        description="Enlarge the kernels of named convolutions (3x3 -> 5x5) by "
        "zero taps and wider padding: exact for every stride, "
        "dilation and padding mode; odd growth is refused.",
        epilog="examples:\n  fxgrow grow-kernel torchvision:resnet18 --kernel "
        "layer1.0.conv1=5\n\n" + model_help,
    )
    common(p)
    p.add_argument(
        "--kernel",
        action="append",
        metavar="MODULE=SIZE",
        help="new kernel size of one convolution (repeatable)",
    )
    results(p)
    p.set_defaults(func=cmd_grow_kernel)
