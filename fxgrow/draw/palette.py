"""Group colours: distinct, stable, readable on white, never the blocker red."""
from __future__ import annotations

import colorsys

# hand-picked first colours (Tableau/Okabe-Ito-like, no pure red: red marks blockers)
_BASE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
         "#bcbd22", "#0b3d91", "#f0a30a", "#006d5b", "#7f3fbf", "#b8860b", "#00a3e0",
         "#6b8e23", "#c71585")

BLOCKER = "#d62728"      # outline of nodes that block a group
INSERTED = "#00897b"     # outline of nodes / boxes fxgrow inserted (before/after view)
NEUTRAL = "#9e9e9e"      # edges that carry no channel group (sizes, masks, positions)


def palette(n: int) -> list[str]:
    """``n`` distinct ``#rrggbb`` colours: the base colours, then golden-angle hues at three
    saturation/value levels, skipping hues near the blocker red."""
    out: list[str] = []
    seen: set[str] = set()
    for c in _BASE[:n]:
        out.append(c)
        seen.add(c)
    k = 0
    levels = ((0.75, 0.80), (0.55, 0.60), (0.90, 0.95), (0.45, 0.85))
    while len(out) < n:
        hue = (k * 0.618033988749895 + 0.11) % 1.0
        s, v = levels[(k // 7) % len(levels)]
        k += 1
        if hue < 0.03 or hue > 0.96:
            continue
        r, g, b = colorsys.hsv_to_rgb(hue, s, v)
        c = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        if c in seen or c == BLOCKER:
            continue
        seen.add(c)
        out.append(c)
    return out


def tint(colour: str, amount: float = 0.82) -> str:
    """``colour`` mixed with white (``amount`` of white): a pale fill for nodes."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    r, g, b = (round(c + (255 - c) * amount) for c in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"
