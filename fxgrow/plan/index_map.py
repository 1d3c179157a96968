"""Index maps: where each position of a grown axis comes from, and its replication count."""
from __future__ import annotations

import torch

from ..analysis.layout import Atom, Fixed, Layout, SpaceTable


def expand(sp: SpaceTable, layout: Layout, maps: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """For each new position of ``layout``: the old position it copies and how many new
    positions copy that old one (the divisor for consumers).  ``maps``: root -> ReplicationMap."""
    idx_parts, cnt_parts = [], []
    off = 0
    for seg in sp.resolve(layout):
        if isinstance(seg, Fixed):
            idx_parts.append(torch.arange(off, off + seg.size))
            cnt_parts.append(torch.ones(seg.size, dtype=torch.long))
            off += seg.size
        elif isinstance(seg, Atom):
            w = sp.width[seg.id]
            m = maps.get(sp.find(seg.id))
            if m is None:
                idx_parts.append(torch.arange(off, off + w))
                cnt_parts.append(torch.ones(w, dtype=torch.long))
            else:
                src = m.source_tensor()
                idx_parts.append(src + off)
                cnt_parts.append(m.count_tensor()[src])
            off += w
        else:
            oi, oc = expand(sp, seg.outer, maps)
            ii, ic = expand(sp, seg.inner, maps)
            si = sp.size(seg.inner)
            idx_parts.append((oi[:, None] * si + ii[None, :]).reshape(-1) + off)
            cnt_parts.append((oc[:, None] * ic[None, :]).reshape(-1))
            off += sp.size(seg.outer) * si
    if not idx_parts:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(idx_parts), torch.cat(cnt_parts)
