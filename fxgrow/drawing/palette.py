"""Group colours: distinct, stable, readable on white, never the blocker red."""

from __future__ import annotations

import math

# hand-picked first colours (Tableau/Okabe-Ito-like, no pure red: red marks blockers)
_BASE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#0b3d91",
    "#f0a30a",
    "#006d5b",
    "#7f3fbf",
    "#b8860b",
    "#00a3e0",
    "#6b8e23",
    "#c71585",
)

BLOCKER = "#d62728"  # outline of nodes that block a group
INSERTED = "#00897b"  # outline of nodes / boxes fxgrow inserted (before/after view)
NEUTRAL = "#9e9e9e"  # edges that carry no channel group (sizes, masks, positions)


def _oklab_to_srgb(L: float, a: float, b: float) -> tuple[float, float, float] | None:
    """OKLab -> sRGB in [0, 1], or None outside the gamut."""
    l_ = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3
    m_ = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3
    s_ = (L - 0.0894841775 * a - 1.2914855480 * b) ** 3
    lin = (
        4.0767416621 * l_ - 3.3077115913 * m_ + 0.2309699292 * s_,
        -1.2684380046 * l_ + 2.6097574011 * m_ - 0.3413193965 * s_,
        -0.0041960863 * l_ - 0.7034186147 * m_ + 1.7076147010 * s_,
    )
    if any(c < -1e-4 or c > 1 + 1e-4 for c in lin):
        return None
    return tuple(
        12.92 * c if c <= 0.0031308 else 1.055 * max(c, 0) ** (1 / 2.4) - 0.055
        for c in (min(max(c, 0.0), 1.0) for c in lin)
    )  # type: ignore[return-value]


def _srgb_to_oklab(colour: str) -> tuple[float, float, float]:
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b))
    l_ = (0.4122214708 * r + 0.5363031013 * g + 0.0514417031 * b) ** (1 / 3)
    m_ = (0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b) ** (1 / 3)
    s_ = (0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b) ** (1 / 3)
    return (
        0.2104542553 * l_ + 0.7936177850 * m_ - 0.0040720468 * s_,
        1.9779984951 * l_ - 2.4285922050 * m_ + 0.4505937099 * s_,
        0.0259040371 * l_ + 0.7827717662 * m_ - 0.8086757660 * s_,
    )


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _candidates() -> list[tuple[str, tuple[float, float, float]]]:
    """In-gamut colours on an OKLCH grid, readable on white (L <= 0.75), away from the
    blocker red."""
    red = _srgb_to_oklab(BLOCKER)
    out = []
    for L in (0.42, 0.52, 0.62, 0.72):
        for C in (0.08, 0.12, 0.16):
            for k in range(72):
                h = 2 * math.pi * k / 72
                lab = (L, C * math.cos(h), C * math.sin(h))
                rgb = _oklab_to_srgb(*lab)
                if rgb is None or math.dist(lab, red) < 0.09:
                    continue
                out.append((_hex(rgb), lab))
    return out


def palette(n: int) -> list[str]:
    """``n`` distinct ``#rrggbb`` colours: the hand-picked base colours, then colours chosen
    one at a time as far as possible, in the perceptually uniform OKLab space, from every
    colour chosen so far (greedy farthest point), never the blocker red."""
    out = list(_BASE[:n])
    if len(out) >= n:
        return out
    chosen = [_srgb_to_oklab(c) for c in out]
    pool = _candidates()
    nearest = [min((math.dist(lab, c) for c in chosen), default=9.0) for _, lab in pool]
    taken: set[str] = set(out) | {BLOCKER}
    while len(out) < n:
        k = max(range(len(pool)), key=lambda i: (nearest[i], -i))
        colour, lab = pool[k]
        if colour in taken:  # the grid is exhausted: every remaining colour is a repeat
            nearest[k] = -1.0
            if max(nearest) < 0:
                raise ValueError(f"cannot make {n} distinct colours")
            continue
        taken.add(colour)
        out.append(colour)
        nearest = [min(d, math.dist(l2, lab)) for d, (_, l2) in zip(nearest, pool)]
    return out


def tint(colour: str, amount: float = 0.82) -> str:
    """``colour`` mixed with white (``amount`` of white): a pale fill for nodes."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    r, g, b = (round(c + (255 - c) * amount) for c in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"
