"""Grow a checkpoint on disk, tensor by tensor: ``write_student`` for any safetensors state
dict and a ``StreamPlan``; ``grow_checkpoint`` for a Hugging Face folder (config in, grown
config, shards, tokenizer and a short model card out), planned by ``planner.plan_checkpoint``
and verified layer by layer (``check.verify_streamed``).

Memory: one teacher tensor and the student tensor made from it, each in memory reused from
tensor to tensor (unchanged tensors are copied as bytes by the kernel or in 8 MB chunks, zero
copies written from a zero buffer): a few of the largest tensors, whatever the model's
size."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .buffers import Buffers
from .check import verify_folders, verify_streamed
from .checkpoint import INDEX, Checkpoint
from .errors import WriteError
from .plan import StreamPlan, make_tensor
from .planner import CheckpointPlan, plan_checkpoint
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
    memory = Buffers()  # teacher tensors and recipe outputs: the same shapes recur
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
                        info = teacher.tensors[src.source]
                        old = teacher.read(src.source, out=memory.staging(info.nbytes))
                        dst = memory.take(old.dtype, spec.shape) if src.recipe is not None else None
                        new = make_tensor(src, old, out=dst)
                        write_tensor(out, new, spec)
                        if dst is not None and new is dst:
                            memory.give(dst)
                        del new, old
                    bar.update(spec.nbytes)
    memory.clear()
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
