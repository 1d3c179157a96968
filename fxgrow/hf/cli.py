"""``fxgrow grow SRC_FOLDER -o OUT_FOLDER ...``: a Hugging Face folder grown into another.

Invariant: the output folder, when it appears, holds a model of the source's class that
computes the source model's function (checked on fresh inputs with padding) and whose config
has the targeted fields.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, UnknownGroupError
from ..growth import growth_record
from ..params import count_parameters
from .folder import example_ids, load_folder, save_folder
from .target import parse_overrides


@dataclass(frozen=True)
class FolderGrowth:
    """What ``grow_folder`` did: the folder written, the config fields changed, the measured
    preservation error on fresh inputs and the parameter counts."""

    out: Path
    fields: Mapping[str, Any]
    error: float | None
    params_before: int
    params_after: int


def expand_globs(model, widths: Mapping[str, int]) -> dict[str, int]:
    """``{'model.layers.*.mlp.up_proj': 256}`` -> one entry per module the pattern matches."""
    names = [n for n, _ in model.named_modules() if n]
    out: dict[str, int] = {}
    for pattern, width in widths.items():
        if any(c in pattern for c in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise UnknownGroupError(
                    f"--width {pattern!r} matches no module of "
                    f"{type(model).__name__} (e.g. {names[min(5, len(names) - 1)]})"
                )
            out.update(dict.fromkeys(hits, width))
        else:
            out[pattern] = width
    return out


def grow_folder(
    src: str | Path,
    out: str | Path,
    *,
    to_config: Any = None,
    blocks: Mapping[str, int] | None = None,
    widths: Mapping[str, int] | None = None,
    factor: float | None = None,
    seed: int = 0,
    split: str = "equal",
    untie: bool = False,
    max_shard_size: str | int = "5GB",
    overwrite: bool = False,
) -> FolderGrowth:
    """Load the folder ``src``, grow it (``to_config``: a dict, KEY=VALUE strings or a
    config.json path; or ``blocks`` / ``widths`` (globs allowed) / ``factor``), check it on
    fresh inputs and write it to ``out`` as a Hugging Face folder."""
    import fxgrow

    from .student import to_pretrained

    if to_config is None and not blocks and not widths and factor is None:
        raise InputError(
            "say how to grow: --to-config KEY=VALUE (or a config.json), --blocks, "
            "--width or --factor"
        )
    teacher = load_folder(src)
    x = example_ids(teacher.config, seed=seed)
    if isinstance(to_config, (list, tuple)):
        target = (
            to_config[0]
            if len(to_config) == 1 and "=" not in to_config[0]
            else parse_overrides(list(to_config))
        )
        to_config = target
    if to_config is not None:
        if blocks or widths or factor is not None:
            raise InputError(
                "--to-config sets the widths and blocks itself: drop --blocks, --width and --factor"
            )
        student = fxgrow.grow(teacher, x, to_config=to_config, seed=seed, split=split, untie=untie)
    else:
        width: Any = factor if factor is not None else expand_globs(teacher, widths or {})
        graph = fxgrow.grow(
            teacher,
            x,
            blocks=dict(blocks or {}) or None,
            width=width or None,
            seed=seed,
            split=split,
            untie=untie,
            as_graph=True,
        )
        student = to_pretrained(teacher, graph)  # type: ignore[arg-type]
    written = save_folder(
        student, out, source=src, max_shard_size=max_shard_size, overwrite=overwrite
    )
    record = growth_record(student)
    return FolderGrowth(
        written,
        dict(record.config_fields or {}) if record else {},
        record.fresh_error if record else None,
        count_parameters(teacher),
        count_parameters(student),
    )


def command(args, assignments) -> int:
    """The CLI's ``grow`` on a folder (``args`` from fxgrow.cli's parser)."""
    if not args.output:
        raise InputError("growing a Hugging Face folder needs -o OUT_FOLDER")
    if getattr(args, "stream", False):
        return _stream(args, assignments)
    result = grow_folder(
        args.model,
        args.output,
        to_config=args.to_config or None,
        blocks=assignments(args.blocks, "--blocks", "model.layers=4"),
        widths=assignments(args.width, "--width", "'model.layers.*.mlp.up_proj=256'"),
        factor=args.factor,
        seed=args.seed,
        split=args.split,
        untie=args.untie,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
    )
    fields = ", ".join(f"{k}={v}" for k, v in result.fields.items()) or "none"
    err = "n/a" if result.error is None else f"{result.error:.3g}"
    print(
        f"wrote {result.out}: {result.params_before:,} -> {result.params_after:,} parameters; "
        f"config: {fields}; max rel err on fresh inputs {err}"
    )
    return 0


def _stream(args, assignments) -> int:
    """``fxgrow grow SRC_FOLDER -o OUT_FOLDER --stream``: fxgrow.stream.grow_checkpoint."""
    from ..stream import grow_checkpoint

    if args.untie:
        raise InputError("--stream keeps tied embeddings tied; drop --untie")
    blocks = assignments(args.blocks, "--blocks", "model.layers=4") or {}
    if len(blocks) > 1:
        raise InputError(f"--stream grows one layer stack, got --blocks for {sorted(blocks)}")
    stage, count = next(iter(blocks.items())) if blocks else (None, None)
    report = grow_checkpoint(
        args.model,
        args.output,
        blocks=count,
        stage=stage,
        placement=args.placement,
        widths=assignments(args.width, "--width", "'model.layers.*.mlp.up_proj=256'") or None,
        factor=args.factor,
        seed=args.seed,
        split=args.split,
        max_shard_size=args.max_shard_size,
        verify=args.verify,
        to_config=list(args.to_config) if args.to_config else None,
    )
    check = "not verified (--no-verify)" if report.check is None else str(report.check)
    print(
        f"wrote {report.out_dir}: {len(report.shards)} shard(s), "
        f"{report.bytes_written / 1e9:.2f} GB in {report.seconds:.1f} s; {check}"
    )
    return 0
