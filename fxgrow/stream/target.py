"""A target config as a streamed growth: the widths and the block count that the in-memory
``grow(to_config=)`` (``fxgrow.hf.target``) finds for it, found the same way on the meta model.

Invariant: ``config_target`` returns what ``grow_to_config`` would grow (its group widths, its
layer count, on the stage of the teacher's ``num_hidden_layers`` blocks), or raises the
``ConfigError`` it would raise; a stream that only a zero padding reaches (a hidden size that
is no whole multiple) is refused here, naming the nearest whole multiple."""

from __future__ import annotations

from typing import Any

import torch

from ..analysis import Analysis
from ..analysis.blocks import find_stages
from ..errors import ConfigError


def config_target(
    analysis: Analysis, model: torch.nn.Module, config: Any, to_config: Any
) -> tuple[dict[str, int], int | None, str | None, dict]:
    """(group widths, new block count or None, its stage, the target's fields) for
    ``to_config`` (a config, a dict, ``KEY=VALUE`` strings or a config.json path)."""
    from ..hf import config as cfg
    from ..hf.target import _padded, parse_overrides, target_fields, widths_for

    if isinstance(to_config, (list, tuple)):
        to_config = (
            to_config[0]
            if len(to_config) == 1 and "=" not in str(to_config[0])
            else parse_overrides([str(v) for v in to_config])
        )
    fields = target_fields(config, to_config)
    if not fields:
        raise ConfigError(
            "the target config changes nothing: name fields to grow (e.g. intermediate_size=8448)"
        )
    amap = getattr(config, "attribute_map", {}) or {}
    head = amap.get("head_dim", "head_dim")
    if head in fields:
        raise ConfigError(
            f"the target changes {head} ({getattr(config, head, None)} -> "
            f"{fields[head]}): fxgrow grows whole heads and keeps their size; "
            f"grow num_attention_heads (and num_key_value_heads) instead"
        )
    cls = type(model)
    probe = cfg.probe(cls, config)
    layers = amap.get("num_hidden_layers", "num_hidden_layers")
    depth = {f: v for f, v in fields.items() if f in probe.structural and f == layers}
    width_fields = {f: v for f, v in fields.items() if f not in depth}
    widths: dict[str, int] = {}
    if width_fields:
        try:
            want = cfg.shapes_for(cls, cfg.with_fields(config, width_fields))
        except ConfigError as e:
            raise ConfigError(f"the target {width_fields} is not a valid config: {e}") from e
        widths = widths_for(analysis, probe.base, want)
        pads = sorted(n for n, w in widths.items() if _padded(analysis, analysis.group(n), w))
        if pads:
            g = analysis.group(pads[0])
            w = widths[pads[0]]
            raise ConfigError(
                f"the target grows the normalised stream {pads[0]!r} from {g.width} to {w}, "
                f"not a whole multiple: its zero padding changes the norms' eps, which a "
                f"streamed growth does not do yet; grow it to a multiple of {g.width} (e.g. "
                f"{g.width * -(-w // g.width)}) or grow in memory (without --stream)"
            )
    blocks = stage = None
    if depth:
        ((field, count),) = depth.items()
        old = getattr(config, field)
        found = find_stages(analysis.gm, analysis.state.vals_by_name(analysis.gm))
        st = next((s for s in found if s.count == old), None)
        if st is None:
            raise ConfigError(
                f"no residual stage of {old} blocks to grow to {field}={count}; "
                f"stages: {', '.join(f'{s.name} ({s.count})' for s in found)}"
            )
        blocks, stage = int(count), st.name
    return widths, blocks, stage, fields
