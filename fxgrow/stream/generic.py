"""Streamed widening of any model whose state dict is a safetensors file (torchvision, timm,
your own): the model built on the meta device by the caller, the teacher's tensors read from
the file.

The student's architecture is fxgrow's own rewrite of the meta graph (``rewrite.widen.apply``
on meta tensors: no parameter memory), so verification runs the teacher's and that graph,
each layer-streamed from its checkpoint.  Depth growth by renaming is for Hugging Face
folders (``grow_checkpoint``), where a deeper config names the deeper model."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..analysis import as_tuple
from ..errors import InputError
from ..planning.plan import check_plan
from .checkpoint import Checkpoint
from .errors import WriteError
from .grow import GrowthReport, write_student
from .plan import balanced, make_stream_plan
from .writer import staging


def _meta(x: Any) -> Any:
    return x.to("meta") if isinstance(x, torch.Tensor) else x


def widen_safetensors(
    model: torch.nn.Module,
    example_inputs: Any,
    src: str | Path,
    out_dir: str | Path,
    *,
    widths: Mapping[str, int] | None = None,
    factor: float | None = None,
    seed: int = 0,
    max_shard_size: int | str = "5GB",
    verify: bool = True,
    progress: bool | None = None,
) -> GrowthReport:
    """Widen the teacher whose architecture is ``model`` (on the meta device, or any device:
    its values are never read) and whose weights are the safetensors file or folder ``src``,
    into ``out_dir`` (shards, dtype kept).  ``example_inputs`` are real tensors: the analysis
    runs on meta copies of them, the layer-streamed verification on them."""
    import fxgrow

    from ..rewrite.widen import apply
    from .verify import verify_checkpoints

    start = time.perf_counter()
    out = Path(out_dir)
    if widths is None and factor is None:
        raise InputError("nothing to grow: give widths= or factor=")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WriteError(
            f"{out} already exists and is not empty; choose another output folder or remove it"
        )
    inputs = as_tuple(example_inputs)
    model.eval()
    analysis = fxgrow.analyze(model, tuple(_meta(x) for x in inputs))
    wplan = balanced(fxgrow.plan(analysis, widths=widths, factor=factor, seed=seed), seed)
    check_plan(analysis, wplan)
    with Checkpoint(src) as teacher:
        plan = make_stream_plan(
            analysis, {n: i.shape for n, i in teacher.tensors.items()}, widen=wplan
        )
        student_graph = apply(analysis, wplan) if verify else None
        planned = time.perf_counter()
        with staging(out) as tmp:
            files = write_student(
                plan, teacher, tmp, max_shard_size=max_shard_size, progress=progress
            )
            written = time.perf_counter()
            check = None
            if student_graph is not None:
                with Checkpoint(tmp) as student:
                    check = verify_checkpoints(
                        analysis.gm, student_graph, teacher, student, inputs, plan=plan
                    )
            verified = time.perf_counter()
            nbytes = sum(p.stat().st_size for p in tmp.iterdir())
    return GrowthReport(
        out,
        None,
        plan,
        tuple(files),
        nbytes,
        time.perf_counter() - start,
        check,
        planned - start,
        written - planned,
        verified - written,
    )
