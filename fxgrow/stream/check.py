"""Verification of a grown Hugging Face folder against its teacher: both models run
layer-streamed on the same random tokens, each module's parameters read from its checkpoint
for its call (``modules.run_modules``), or, for a model that reads a parameter outside its
module's call, as a graph captured on the meta device (``verify.verify_checkpoints``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import PreservationError
from .checkpoint import Checkpoint
from .plan import StreamPlan
from .verify import StreamedCheck


def verify_streamed(
    config: Any,
    new_config: Any,
    teacher: Checkpoint,
    student: Checkpoint,
    *,
    plan: StreamPlan | None = None,
    tokens: int = 8,
    check: bool = True,
    teacher_graph: torch.fx.GraphModule | None = None,
    models: tuple[Any, Any] | None = None,
) -> StreamedCheck:
    """Teacher (``config``, ``teacher``'s tensors) against student (``new_config``,
    ``student``'s) on random tokens, each run layer-streamed in float32; raises
    ``PreservationError`` naming the tensors that differ from ``plan`` when they disagree.

    Each model runs its own code on the meta device with every module's parameters read for
    its call (``modules.run_modules``: no capture).  A model that reads a parameter outside
    its module's call is run as a graph captured on ``tokens`` meta tokens instead
    (``teacher_graph``: the teacher's, already captured; it is modified: reads move next to
    their users).  ``models``: the two meta models, when already built."""
    from .hf import example_ids, meta_model
    from .modules import run_modules
    from .threads import streamed_threads
    from .verify import judge, verify_checkpoints

    ids = example_ids(config, tokens)
    t_model, s_model = (
        models
        if models is not None and None not in models
        else (meta_model(config), meta_model(new_config))
    )
    t_alias, s_alias = _aliases(t_model, teacher), _aliases(s_model, student)
    try:
        with streamed_threads():  # one count for both runs
            t_out, t_peak = run_modules(t_model, teacher, ids, aliases=t_alias)
            s_out, s_peak = run_modules(s_model, student, ids, aliases=s_alias)
    except (PreservationError, RuntimeError, NotImplementedError):
        t_graph = teacher_graph if teacher_graph is not None else _capture(t_model, ids)
        return verify_checkpoints(
            t_graph,
            _capture(s_model, ids),
            teacher,
            student,
            ids,
            plan=plan,
            teacher_aliases=t_alias,
            student_aliases=s_alias,
            check=check,
            tolerance=_tolerance_dtype(plan, student),
        )
    return judge(
        t_out,
        s_out,
        t_peak,
        s_peak,
        teacher,
        student,
        plan=plan,
        check=check,
        dtype=_tolerance_dtype(plan, student),
    )


def _tolerance_dtype(plan: StreamPlan | None, student: Checkpoint) -> torch.dtype:
    """float32's tolerance, or the stored dtype's where the plan splits a unit into shares
    that are no power of two (1/3 is not a bfloat16 number: the stored student rounds)."""
    stored = {i.torch_dtype for i in student.tensors.values() if i.torch_dtype.is_floating_point}
    low = [d for d in stored if d.itemsize < 4]
    if plan is None or plan.widen is None or not low:
        return torch.float32
    for c in plan.widen.changes:
        counts = c.map.counts if c.map.fractions is None else None
        if counts is None or any(int(n) & (int(n) - 1) for n in counts):
            return max(low, key=lambda d: torch.finfo(d).eps)
    return torch.float32


def verify_folders(
    teacher_dir: str | Path,
    student_dir: str | Path,
    *,
    plan: StreamPlan | None = None,
    tokens: int = 8,
    check: bool = True,
) -> StreamedCheck:
    """``verify_streamed`` on two Hugging Face folders (the configs read from them)."""
    import transformers

    with Checkpoint(teacher_dir) as t, Checkpoint(student_dir) as s:
        return verify_streamed(
            transformers.AutoConfig.from_pretrained(teacher_dir),
            transformers.AutoConfig.from_pretrained(student_dir),
            t,
            s,
            plan=plan,
            tokens=tokens,
            check=check,
        )


def _capture(model: torch.nn.Module, ids: tuple) -> torch.fx.GraphModule:
    import fxgrow

    return fxgrow.api.capture(model, tuple(x.to("meta") for x in ids))


def _aliases(model: torch.nn.Module, ckpt: Checkpoint) -> dict[str, str]:
    """Graph attribute -> checkpoint name, for parameters stored under another (tied) name."""
    by_id: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(n)
    out = {}
    for names in by_id.values():
        stored = [n for n in names if n in ckpt.tensors]
        if stored:
            out.update({n: stored[0] for n in names if n not in ckpt.tensors})
    return out
