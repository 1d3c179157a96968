"""Grow a checkpoint on disk, tensor by tensor: ``write_student`` for any safetensors state
dict and a ``StreamPlan``; ``grow_checkpoint`` for a Hugging Face folder (config in, grown
config, shards, tokenizer and a short model card out), verified layer by layer.

Memory: one teacher tensor and the student tensor made from it (unchanged tensors are copied
as bytes in 8 MB chunks, zero copies written from a zero buffer): a few of the largest
tensors, whatever the model's size."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, PreservationError
from ..planning.plan import check_plan
from .checkpoint import INDEX, Checkpoint
from .errors import WriteError
from .plan import StreamPlan, balanced, make_stream_plan, make_tensor
from .verify import StreamedCheck
from .writer import (
    OutTensor,
    check_free_space,
    shard,
    staging,
    write_index,
    write_tensor,
    write_zeros,
)

_WEIGHTS = re.compile(
    r"(\.safetensors|\.bin|\.pt|\.pth|\.ckpt|\.h5|\.msgpack)$|"
    r"^model\.safetensors\.index\.json$|^pytorch_model\.bin\.index\.json$"
)


def parse_size(size: int | str) -> int:
    """``5GB`` / ``500MB`` / ``2GiB`` / bytes."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(size), re.IGNORECASE)
    if not m:
        raise InputError(f"max_shard_size {size!r} is not a size such as 5GB or 500MB")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(m.group(2).upper() or " "))


def _progress(total: int, enabled: bool | None):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="growing",
        disable=None if enabled is None else not enabled,
        dynamic_ncols=True,
    )


def write_student(
    plan: StreamPlan,
    teacher: Checkpoint,
    folder: Path,
    *,
    max_shard_size: int | str = "5GB",
    progress: bool | None = None,
) -> list[str]:
    """The plan's tensors as safetensors shards in ``folder`` (dtype kept); returns the shard
    file names."""
    specs = [
        OutTensor(t.name, teacher.tensors[t.source].dtype, tuple(t.shape)) for t in plan.tensors
    ]
    shards = shard(specs, parse_size(max_shard_size))
    check_free_space(folder, sum(s.nbytes for s in shards) + (64 << 20))
    sources = plan.sources()
    with _progress(sum(s.nbytes for s in shards), progress) as bar:
        for s in shards:
            with open(folder / s.file, "wb") as out:
                out.write(s.header())
                for spec in s.tensors:
                    src = sources[spec.name]
                    if src.zero:
                        write_zeros(out, spec.nbytes)
                    elif src.unchanged:
                        teacher.copy_to(src.source, out)
                    else:
                        new = make_tensor(src, teacher.read(src.source))
                        write_tensor(out, new, spec)
                        del new
                    bar.update(spec.nbytes)
    write_index(folder, shards)
    return [s.file for s in shards]


@dataclass(frozen=True)
class GrowthReport:
    """What ``grow_checkpoint`` wrote and measured."""

    out_dir: Path
    config: Any
    plan: StreamPlan
    shards: tuple[str, ...]
    bytes_written: int
    seconds: float
    check: StreamedCheck | None
    plan_seconds: float = 0.0  # config, meta model, capture, analysis, plan
    write_seconds: float = 0.0  # the shards
    verify_seconds: float = 0.0  # layer-streamed teacher and student runs


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
    if blocks is not None and widths is None and factor is None and to_config is None:
        from .reduced import reduced_depth_plan  # all blocks alike: capture two of them

        plan = reduced_depth_plan(
            config, model, shapes, ids, blocks=blocks, stage=stage, placement=placement
        )
        if plan is not None:
            new_config, student = grown_model(config, model, plan)
            return CheckpointPlan(src, config, new_config, plan, None, tokens, model, student)
    analysis = fxgrow.analyze(model, tuple(x.to("meta") for x in ids))
    wplan, fields = None, {}
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


def grow_checkpoint(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    blocks: int | None = None,
    stage: str | None = None,
    placement: str = "interleave",
    widths: Mapping[str, int] | None = None,
    factor: float | None = None,
    seed: int = 0,
    split: str = "equal",
    max_shard_size: int | str = "5GB",
    verify: bool = True,
    verify_tokens: int = 8,
    progress: bool | None = None,
    planned: CheckpointPlan | None = None,
    to_config: Any = None,
) -> GrowthReport:
    """Grow the Hugging Face folder ``src_dir`` into ``out_dir`` without loading the model:
    ``blocks`` (new block count of ``stage``, default the decoder's layers; LLaMA-Pro
    ``interleave`` or ``append``) and/or ``widths`` (group or module name, globs allowed ->
    width) / ``factor``, or ``to_config`` (the target config's fields; see
    ``plan_checkpoint``).  Plans on the meta device (``plan_checkpoint``, or pass its result as
    ``planned``), streams the tensors, writes config.json with the new sizes and copies the
    other files (tokenizer, generation config).  With ``verify`` the student is run
    layer-streamed against the teacher before the folder appears."""
    start = time.perf_counter()
    src, out = Path(src_dir), Path(out_dir)
    if out.resolve() == src.resolve():
        raise WriteError("the output folder is the teacher's; write the student elsewhere")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before planning
        raise WriteError(
            f"{out} already exists and is not empty; choose another output folder or remove it"
        )
    if planned is None:
        planned = plan_checkpoint(
            src,
            blocks=blocks,
            stage=stage,
            placement=placement,
            widths=widths,
            factor=factor,
            seed=seed,
            split=split,
            tokens=verify_tokens,
            to_config=to_config,
        )
    config, new_config, plan = planned.config, planned.new_config, planned.plan
    planned_at = time.perf_counter()
    with Checkpoint(src) as teacher, staging(out) as tmp:
        files = write_student(plan, teacher, tmp, max_shard_size=max_shard_size, progress=progress)
        for f in sorted(src.iterdir()):
            if (
                f.is_file()
                and f.name != "config.json"
                and not _WEIGHTS.search(f.name)
                and f.name != "README.md"
            ):
                shutil.copy2(f, tmp / f.name)
        new_config.save_pretrained(tmp)
        written_at = time.perf_counter()
        check = None
        if verify:
            with Checkpoint(tmp) as student:
                check = verify_streamed(
                    config,
                    new_config,
                    teacher,
                    student,
                    plan=plan,
                    tokens=planned.tokens,
                    teacher_graph=planned.teacher_graph,
                    models=(planned.teacher_model, planned.student_model),
                )
        verified = time.perf_counter()
        _model_card(tmp, src, plan, new_config, config, check)
        written = sum(p.stat().st_size for p in tmp.iterdir())
    return GrowthReport(
        out,
        new_config,
        plan,
        tuple(files),
        written,
        time.perf_counter() - start,
        check,
        planned_at - start,
        written_at - planned_at,
        verified - written_at,
    )


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


def _model_card(
    folder: Path, src: Path, plan: StreamPlan, new: Any, old: Any, check: StreamedCheck | None
) -> None:
    fields = (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "num_hidden_layers",
    )
    changes = [
        f"- `{k}`: {getattr(old, k)} -> {getattr(new, k)}"
        for k in fields
        if getattr(old, k, None) != getattr(new, k, None)
    ]
    lines = [
        f"# Grown from `{src.name}` by fxgrow",
        "",
        "Grown without changing what it computes (Net2Net / LLaMA-Pro, streamed tensor by tensor).",
        "",
        *changes,
    ]
    if plan.zeroed:
        lines += ["", f"Inserted blocks (zero-output copies): {list(plan.zeroed)}"]
    lines += [
        "",
        "Preservation error, layer-streamed teacher vs student on random tokens: "
        + (str(check) if check else "not measured (verify=False)"),
    ]
    (folder / "README.md").write_text("\n".join(lines) + "\n")
    record = {
        "teacher": str(src),
        "zeroed_blocks": list(plan.zeroed),
        "layers": list(plan.layers) if plan.layers else None,
        "widen": json.loads(plan.widen.to_json())
        if plan.widen is not None and hasattr(plan.widen, "to_json")
        else None,
        "max_abs_err": check.max_abs if check else None,
        "max_rel_err": check.max_rel if check else None,
    }
    (folder / "fxgrow_growth.json").write_text(json.dumps(record, indent=2) + "\n")


__all__ = [
    "INDEX",
    "CheckpointPlan",
    "GrowthReport",
    "grow_checkpoint",
    "parse_size",
    "plan_checkpoint",
    "verify_folders",
    "verify_streamed",
    "write_student",
]
