"""Index maps: where each position of a grown axis comes from, and how much of it it takes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analysis.layout import Atom, Fixed, Layout, Prod, SpaceTable, Zip
from ..errors import WidthError


@dataclass(frozen=True)
class Expansion:
    """Per new position of an axis: the old position it copies (``index``), the share of the
    old unit it carries (``fraction``: 1/c(g(j)) for an equal split, or a random split; the
    shares of one unit's copies sum to 1), and how many copies that unit has (``count``)."""

    index: torch.Tensor
    fraction: torch.Tensor
    count: torch.Tensor


def expand(sp: SpaceTable, layout: Layout, maps: dict) -> Expansion:
    """The expansion of ``layout`` under ``maps`` (class root -> ReplicationMap)."""
    idx_parts, frac_parts, cnt_parts = [], [], []
    off = 0
    for seg in sp.resolve(layout):
        if isinstance(seg, Fixed):
            idx_parts.append(torch.arange(off, off + seg.size))
            frac_parts.append(torch.ones(seg.size, dtype=torch.float64))
            cnt_parts.append(torch.ones(seg.size, dtype=torch.long))
            off += seg.size
        elif isinstance(seg, Atom):
            w = sp.width[seg.id]
            m = maps.get(sp.find(seg.id))
            if m is None:
                idx_parts.append(torch.arange(off, off + w))
                frac_parts.append(torch.ones(w, dtype=torch.float64))
                cnt_parts.append(torch.ones(w, dtype=torch.long))
            else:
                src = m.source_tensor()
                idx_parts.append(src + off)
                frac_parts.append(m.fraction_tensor())
                cnt_parts.append(m.count_tensor()[src])
            off += w
        elif isinstance(seg, Zip):
            e = _expand_zip(sp, seg, maps)
            idx_parts.append(e.index + off)
            frac_parts.append(e.fraction)
            cnt_parts.append(e.count)
            off += sp.size((seg,))
        else:
            assert isinstance(seg, Prod), seg
            o, i = expand(sp, seg.outer, maps), expand(sp, seg.inner, maps)
            si = sp.size(seg.inner)
            idx_parts.append((o.index[:, None] * si + i.index[None, :]).reshape(-1) + off)
            frac_parts.append((o.fraction[:, None] * i.fraction[None, :]).reshape(-1))
            cnt_parts.append((o.count[:, None] * i.count[None, :]).reshape(-1))
            off += sp.size(seg.outer) * si
    if not idx_parts:
        empty = torch.zeros(0, dtype=torch.long)
        return Expansion(empty, empty.double(), empty)
    return Expansion(torch.cat(idx_parts), torch.cat(frac_parts), torch.cat(cnt_parts))


def _expand_zip(sp: SpaceTable, z: Zip, maps: dict) -> Expansion:
    """Part k's unit p sits at p g + k, in the teacher and (the parts grew alike) in the
    student."""
    g = len(z.parts)
    subs = [expand(sp, part, maps) for part in z.parts]
    growth = {len(e.index) - sp.size(part) for e, part in zip(subs, z.parts)}
    if len(growth) != 1:
        raise WidthError(
            "the parts of an interleaved (channel-shuffled) axis grew by "
            "different amounts; the plan must widen them alike"
        )
    total = sum(len(e.index) for e in subs)
    index = torch.empty(total, dtype=torch.long)
    fraction = torch.empty(total, dtype=torch.float64)
    count = torch.empty(total, dtype=torch.long)
    for k, e in enumerate(subs):
        at = torch.arange(len(e.index)) * g + k
        index[at] = e.index * g + k
        fraction[at] = e.fraction
        count[at] = e.count
    return Expansion(index, fraction, count)
