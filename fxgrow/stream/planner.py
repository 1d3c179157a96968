"""Planning the growth of a Hugging Face folder from its config and its shards' headers alone:
the model is built on the meta device and captured there (no parameter memory); a growth of
the depth and / or of widths inside the blocks of a stage whose blocks are all alike is
planned on a two-block capture (``reduced``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..planning.plan import check_plan
from .checkpoint import Checkpoint
from .plan import StreamPlan, balanced, make_stream_plan


@dataclass(frozen=True)
class CheckpointPlan:
    """What ``plan_checkpoint`` decided, before any weight is read: the teacher's and the
    student's configs, the per-tensor plan, and the teacher's graph (captured on the meta
    device on ``tokens`` tokens, reused by the verification; None when the plan came from a
    two-block capture, ``reduced``)."""

    src: Path
    config: Any
    new_config: Any
    plan: StreamPlan
    teacher_graph: torch.fx.GraphModule | None
    tokens: int
    teacher_model: torch.nn.Module | None = None  # both on the meta device, for the
    student_model: torch.nn.Module | None = None  # layer-streamed verification


def plan_checkpoint(
    src_dir: str | Path,
    *,
    blocks: int | None = None,
    stage: str | None = None,
    placement: str = "interleave",
    widths: Mapping[str, int] | None = None,
    factor: float | None = None,
    seed: int = 0,
    split: str = "equal",
    tokens: int = 8,
    to_config: Any = None,
) -> CheckpointPlan:
    """Plan the growth of the Hugging Face folder ``src_dir`` from its config and its shards'
    headers alone: the model is built on the meta device, captured and analysed there (no
    parameter memory), and every tensor checked against the config.  ``to_config`` (a
    config, a dict or a config.json path) names the target instead of blocks / widths /
    factor: the widths and blocks the in-memory ``grow(to_config=)`` finds, with its maps
    (not balanced) and its appended blocks, so both write the same tensors."""
    import transformers

    import fxgrow

    from .hf import check_dtypes, example_ids, expand_widths, grown_model, meta_model

    src = Path(src_dir)
    if not (src / "config.json").is_file():
        raise InputError(
            f"{src} has no config.json; grow_checkpoint takes a Hugging Face model folder"
        )
    if to_config is not None and (blocks is not None or widths is not None or factor is not None):
        raise InputError(
            "to_config sets the widths and blocks itself: drop blocks=, widths= and factor="
        )
    if blocks is None and widths is None and factor is None and to_config is None:
        raise InputError("nothing to grow: give blocks=, widths=, factor= or to_config=")
    config = transformers.AutoConfig.from_pretrained(src)
    with Checkpoint(src) as teacher:
        stored = {n: i.torch_dtype for n, i in teacher.tensors.items()}
        check_dtypes(config, stored)
        shapes = {n: i.shape for n, i in teacher.tensors.items()}
    dtype = next((d for d in stored.values() if d.is_floating_point), torch.float32)
    model = meta_model(config)
    ids = example_ids(config, tokens)
    if factor is None and to_config is None and (widths is None or split == "equal"):
        from .reduced import reduced_plan  # all blocks alike: capture two of them

        plan = reduced_plan(
            config,
            model,
            shapes,
            ids,
            blocks=blocks,
            stage=stage,
            placement=placement,
            widths=widths,
            seed=seed,
        )
        if plan is not None:
            new_config, student = grown_model(config, model, plan)
            return CheckpointPlan(src, config, new_config, plan, None, tokens, model, student)
    analysis = fxgrow.analyze(model, tuple(x.to("meta") for x in ids))
    wplan, fields = None, dict[str, Any]()
    if to_config is not None:
        from .target import config_target

        widths_, blocks, stage, fields = config_target(analysis, model, config, to_config)
        placement = "append"  # grow(to_config=) appends copies of the last block
        if widths_:
            wplan = fxgrow.plan(analysis, widths=widths_, seed=seed, split=split)
    elif widths is not None or factor is not None:
        names = [g.name for g in analysis.groups] + list(analysis.state.modules)
        wplan = balanced(
            fxgrow.plan(
                analysis, widths=expand_widths(widths, names), factor=factor, seed=seed, split=split
            ),
            seed,
        )
    if wplan is not None:
        check_plan(analysis, wplan)
    plan = make_stream_plan(
        analysis, shapes, widen=wplan, blocks=blocks, stage=stage, placement=placement, dtype=dtype
    )
    new_config, student = grown_model(config, model, plan)
    off = {
        f: (getattr(new_config, f, None), v)
        for f, v in fields.items()
        if getattr(new_config, f, None) != v
    }
    if off:
        from ..errors import ConfigError

        raise ConfigError(
            "the grown checkpoint's config differs from the target: "
            + ", ".join(f"{f}={g!r} (target {v!r})" for f, (g, v) in off.items())
        )
    return CheckpointPlan(src, config, new_config, plan, analysis.gm, tokens, model, student)
