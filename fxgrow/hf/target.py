"""Grow a Hugging Face model to a target config.

Invariant: ``grow_to_config(model, x, target)`` returns a model of the teacher's class whose
config has every targeted field at the targeted value and which computes the teacher's
function, or raises :class:`ConfigError` naming the field that cannot be reached and the
nearest config that can.

The widths come from the shapes: a model of the target config is built on the meta device,
and each channel group of the teacher grows by the ratio of the target's size to the
teacher's on the group's parameter axes.  ``num_hidden_layers`` becomes appended copies of
the last block (``grow(blocks=...)``), each starting as the identity.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, PreservationError, WidthError
from ..growth import update_growth_record
from . import config as cfg

_IGNORED = {
    "architectures",
    "transformers_version",
    "_name_or_path",
    "dtype",
    "torch_dtype",
    "use_cache",
    "auto_map",
}


def target_fields(teacher_config: Any, target: Any) -> dict[str, Any]:
    """The fields ``target`` (a config, a dict, or a path to a config.json) sets to values
    other than the teacher's; names in the config's attribute map are resolved."""
    if isinstance(target, (str, Path)):
        target = json.loads(Path(target).read_text())
    if hasattr(target, "to_dict"):
        target = target.to_dict()
    if not isinstance(target, Mapping):
        raise ConfigError(
            f"to_config must be a config, a dict or a config.json path, got {type(target).__name__}"
        )
    amap: Mapping[str, str] = getattr(teacher_config, "attribute_map", {}) or {}
    current = teacher_config.to_dict()
    out: dict[str, Any] = {}
    for key, value in target.items():
        key = amap.get(key, key)
        if key in _IGNORED:
            continue
        if key not in current and not hasattr(teacher_config, key):
            raise ConfigError(f"{type(teacher_config).__name__} has no field {key!r}")
        if current.get(key, getattr(teacher_config, key, None)) != value:
            out[key] = value
    return out


def widths_for(analysis, teacher_shapes: cfg.Shapes, want: cfg.Shapes) -> dict[str, int]:
    """Per group, the growth ratio that makes every parameter axis the target's size: an
    axis laid out over several groups (heads x head dim) grows by the product of theirs.
    Groups alone on some axis are settled first, then each axis with one unsettled group."""
    from fractions import Fraction

    axes: dict[tuple[str, int], list] = {}
    for g in analysis.groups:
        for m in g.members:
            if m.kind == "parameter" and m.target in want and m.axis is not None:
                axes.setdefault((m.target, m.axis), [])
                if g not in axes[(m.target, m.axis)]:
                    axes[(m.target, m.axis)].append(g)
    need = {k: Fraction(want[k[0]][k[1]], teacher_shapes[k[0]][k[1]]) for k in axes}
    ratio: dict[str, Fraction] = {}
    progress = True
    while progress:
        progress = False
        for k, groups in sorted(axes.items(), key=lambda kv: len(kv[1])):
            open_ = [g for g in groups if g.name not in ratio]
            if len(open_) != 1:
                continue
            known = Fraction(1)
            for g in groups:
                if g.name in ratio:
                    known *= ratio[g.name]
            ratio[open_[0].name] = need[k] / known
            progress = True
        if not progress:  # an axis of several open groups: the outer one (on the most axes)
            count: dict[str, int] = {}  # grows, the ones laid inside it (head dims) keep their size
            for groups in axes.values():
                for g in groups:
                    if g.name not in ratio and len(groups) > 1:
                        count[g.name] = count.get(g.name, 0) + 1
            if count:
                outer = max(count, key=lambda n: (count[n], -len(n)))
                k = next(
                    k for k, gs in axes.items() if outer in {g.name for g in gs} and len(gs) > 1
                )
                for g in axes[k]:
                    if g.name != outer and g.name not in ratio:
                        ratio[g.name] = Fraction(1)
                progress = True
    widths: dict[str, int] = {}
    for g in analysis.groups:
        r = ratio.get(g.name, Fraction(1))
        bad = [
            (k, need[k])
            for k, groups in axes.items()
            if g in groups and need[k] != r * _product(ratio, groups, g)
        ]
        if bad:
            (t, a), n = bad[0]
            raise ConfigError(
                f"the target config grows the axes of group {g.name!r} unevenly ({t} axis {a} "
                f"by {float(n):g}, other axes by {float(r):g}): fxgrow grows whole heads and "
                f"keeps the head size and the heads per KV group"
            )
        if r == 1:
            continue
        new_width = g.width * r
        if new_width.denominator != 1 or r < 1:
            raise ConfigError(f"group {g.name!r} ({g.width}) cannot grow by {float(r):g}")
        if not g.widenable:
            raise ConfigError(
                f"the target config changes group {g.name!r}, which cannot grow: "
                + "; ".join(str(b) for b in g.blockers)
            )
        widths[g.name] = int(new_width)
    return widths


def _padded(analysis, group, width: int) -> bool:
    """A group under a normalisation over channels (a residual stream) growing by a
    non-whole factor: grown by zero padding (``pad.py``) instead of replication."""
    sp = analysis.state.spaces
    return width % group.width != 0 and any(
        group.root in sp.roots(lay) for lay, _ in analysis.state.uniform
    )


def _product(ratio, groups, skip):
    from fractions import Fraction

    out = Fraction(1)
    for g in groups:
        if g is not skip:
            out *= ratio.get(g.name, Fraction(1))
    return out


def grow_to_config(
    model,
    inputs: tuple,
    to_config: Any,
    *,
    seed: int = 0,
    split: str = "equal",
    untie: bool = False,
    verify: bool = True,
    as_graph: bool = False,
):
    """``fxgrow.grow(model, x, to_config=...)``: see the module docstring."""
    from ..api import analyze, grow, stages, widen
    from .student import finish, is_pretrained

    if not is_pretrained(model):
        raise ConfigError(f"to_config needs a Hugging Face model, got {type(model).__name__}")
    config, cls = model.config, type(model)
    fields = target_fields(config, to_config)
    if not fields:
        raise ConfigError(
            "the target config changes nothing: name fields to grow (e.g. hidden_size=96)"
        )
    head = (getattr(config, "attribute_map", {}) or {}).get("head_dim", "head_dim")
    if head in fields:
        raise ConfigError(
            f"the target changes {head} ({getattr(config, head, None)} -> "
            f"{fields[head]}): fxgrow grows whole heads and keeps their size; "
            f"grow num_attention_heads (and num_key_value_heads) instead"
        )
    probe = cfg.probe(cls, config)
    layers = (getattr(config, "attribute_map", {}) or {}).get(
        "num_hidden_layers", "num_hidden_layers"
    )
    stacks = _stack_fields(model)
    depth = {
        f: v for f, v in fields.items() if f in stacks or (f in probe.structural and f == layers)
    }
    width_fields = {f: v for f, v in fields.items() if f not in depth}
    try:
        want = cfg.shapes_for(cls, cfg.with_fields(config, width_fields))
    except ConfigError as e:
        raise ConfigError(f"the target {width_fields} is not a valid config: {e}") from e
    analysis = analyze(model, inputs)
    widths = widths_for(analysis, probe.base, want)
    pads = {name: w for name, w in widths.items() if _padded(analysis, analysis.group(name), w)}
    if len(pads) > 1:
        raise ConfigError(
            f"more than one normalised stream grows by a non-whole factor: {sorted(pads)}"
        )
    widths = {name: w for name, w in widths.items() if name not in pads}
    if pads:  # refuse before any work where zero padding is not exact
        from .pad import stream_norms

        for name in pads:
            stream_norms(model, list(analysis.group(name).members))
    student: torch.fx.GraphModule = analysis.gm
    if widths:
        try:
            student = widen(
                analysis,  # already made: not analysed again
                widths=widths,
                seed=seed,
                split=split,
                untie=untie,
                verify=False,
                as_graph=True,
            )  # type: ignore[assignment]
        except WidthError as e:
            raise ConfigError(f"the target {width_fields} is not reachable exactly: {e}") from e
    if pads and as_graph:
        raise ConfigError(
            "a stream zero-padded to a non-whole width exists only as the "
            "class (its norms' eps changes): drop as_graph=True"
        )
    extra = None
    if pads:  # pad before appending blocks, so that the copies are of the padded blocks
        from .fold import fold_tie_scales
        from .pad import pad_graph

        ((pad_name, pad_width),) = pads.items()
        if student is analysis.gm:
            student = copy.deepcopy(student)
        fold_tie_scales(student)
        extra = pad_graph(
            student, model, list(analysis.group(pad_name).members), pad_width, seed=seed
        )
    if depth:
        modules = dict(student.named_modules())
        blocks = {}
        for field, count in depth.items():  # the layer count(s): T5 has two stacks
            if stacks.get(field) in modules:
                blocks[stacks[field]] = count
                continue
            found = list(stages(student, inputs))
            old = getattr(config, field)
            stage = next((s for s in found if s.count == old), None)
            if stage is None:
                raise ConfigError(
                    f"no residual stage of {old} blocks to grow to {field}="
                    f"{count}; stages: "
                    f"{', '.join(f'{s.name} ({s.count})' for s in found)}"
                )
            blocks[stage.name] = count
        student = grow(student, inputs, blocks=blocks, seed=seed, verify=False, as_graph=True)  # type: ignore[assignment]
    if verify and not pads:
        from ..verify import verify as _verify

        update_growth_record(student, error=_verify(model, student, inputs))
    if as_graph:
        return student
    if pads:
        from .student import check_fresh, to_pretrained

        grown = to_pretrained(model, student, check=False, extra=extra)
        if verify:
            try:
                update_growth_record(grown, fresh_error=check_fresh(model, grown))
            except PreservationError as e:
                raise ConfigError(
                    f"growing the stream {pad_name!r} to {pad_width} (not a whole multiple) is "
                    f"not exact for {cls.__name__} ({e}): its norms are not all before the "
                    f"branches (a post-norm model); grow it by a whole multiple"
                ) from e
    else:
        grown = finish(model, student)
    got = grown.config
    off = {f: (getattr(got, f, None), v) for f, v in fields.items() if getattr(got, f, None) != v}
    if off:
        raise ConfigError(
            "the grown model's config differs from the target: "
            + ", ".join(f"{f}={g!r} (target {v!r})" for f, (g, v) in off.items())
        )
    return grown


def _stack_fields(model) -> dict[str, str]:
    """{layer count field: its layer stack's module path} (``num_layers``: ``encoder.block``,
    ``num_decoder_layers``: ``decoder.block``); empty where no stack matches the config."""
    from ..errors import InputError
    from ..rewrite.hf_depth import layer_stacks

    try:
        return {
            f: prefix for prefix, (f, _) in layer_stacks(model.state_dict(), model.config).items()
        }
    except InputError:
        return {}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (values as JSON where they parse: 96, 1e-6, true, [..])."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--to-config takes KEY=VALUE or a config.json, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
