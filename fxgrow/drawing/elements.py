"""What a drawing is made of, independent of Graphviz: channel groups as drawn (``DGroup``),
items (fx nodes or folded modules), the edges between them and the scene that holds them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..analysis.layout import Blocker


@dataclass(eq=False)
class DGroup:
    """A channel group as drawn: its colour and, in a before/after view, its old width."""

    index: int
    name: str
    colour: str
    width: int  # width in the drawn graph
    old: int | None  # the teacher's width; None for a group new in the student
    blockers: tuple[Blocker, ...] = ()

    @property
    def widenable(self) -> bool:
        """True iff nothing blocks the group."""
        return not self.blockers

    @property
    def fixed(self) -> bool:
        """Blocked only by the model's boundaries or non-channel axes."""
        return bool(self.blockers) and all(
            b.kind in ("boundary", "structure") for b in self.blockers
        )

    @property
    def changed(self) -> bool:
        """True when the group exists in the teacher with another width."""
        return self.old is not None and self.old != self.width

    @property
    def change(self) -> str:
        """``64 → 96`` (the label of a widened group)."""
        return f"{self.old} → {self.width}"

    @property
    def status(self) -> str:
        """ "new", "widenable", "fixed (input, ...)" or "blocked by NODE" (the first op blocker)."""
        if self.old is None:
            return "new"
        if not self.blockers:
            return "widenable"
        if self.fixed:
            return "fixed (" + ", ".join(dict.fromkeys(b.label for b in self.blockers)) + ")"
        b = next(b for b in self.blockers if b.kind not in ("boundary", "structure"))
        return f"blocked by {b.node}"

    def describe(self) -> str:
        """One line for a tooltip or legend: name, width (``old → new`` when changed), status."""
        width = self.change if self.changed else str(self.width)
        return f"{self.name}: {width} channels, {self.status}"


@dataclass
class Item:
    """One drawn box: an fx node, or a module folded into one box."""

    id: str
    kind: str  # "node" | "box" | "input" | "output"
    title: str
    subtitle: str
    shape: str
    ancestors: tuple[str, ...]  # module paths of the clusters around it, outermost first
    nodes: list[str]
    out_groups: list[DGroup] = field(default_factory=list)
    inner_groups: list[DGroup] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)
    inserted: int = 0  # how many of its fx nodes the student added
    tooltip: str = ""


@dataclass
class Edge:
    """An arrow from item ``src`` to item ``dst``, coloured by the channel groups it carries."""

    src: str
    dst: str
    groups: list[DGroup]
    labels: list[DGroup] = field(default_factory=list)  # groups labelled old → new here
    names: list[DGroup] = field(default_factory=list)  # groups labelled by name here
    tooltip: str = ""


@dataclass
class Scene:
    """Everything one drawing shows: items, edges, groups for the legend and module clusters;
    ``folded`` lists the modules drawn as one box."""

    title: str
    items: list[Item]
    edges: list[Edge]
    groups: list[DGroup]
    clusters: dict[str, str]  # module path -> cluster label
    before_after: bool = False
    folded: list[str] = field(default_factory=list)
