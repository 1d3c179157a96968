"""Replication maps: which old unit each new unit copies, and how a unit's outgoing weights are
shared among its copies.

Invariant: the first ``old`` units stay in place, every source is an existing unit, and a
unit's shares sum to one (so the copies together compute what the unit did)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import InputError


@dataclass(frozen=True)
class ReplicationMap:
    """g: [0, new) -> [0, old) with g(j) = j for j < old.  ``source[j]`` is g(j).

    ``fractions[j]`` (optional) is the share of unit g(j) that copy j passes on to consumers:
    the shares of one unit's copies sum to 1, so the student stays exact.  Without it the
    split is equal (1 / c(g(j))): replicas then get equal gradients and never diverge."""

    old: int
    new: int
    source: tuple[int, ...]
    fractions: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.source) != self.new or tuple(self.source[: self.old]) != tuple(range(self.old)):
            raise InputError("a replication map must keep its first `old` units in place")
        if any(not 0 <= s < self.old for s in self.source):
            raise InputError("a replication map may only point at existing units")
        if self.fractions is not None:
            if len(self.fractions) != self.new:
                raise InputError("a replication map needs one fraction per new unit")
            sums = [0.0] * self.old
            for s, f in zip(self.source, self.fractions):
                sums[s] += f
            if any(abs(t - 1.0) > 1e-9 for t in sums):
                raise InputError("the fractions of one unit's copies must sum to 1")

    @classmethod
    def random(
        cls, old: int, new: int, generator: torch.Generator, split: str = "equal"
    ) -> ReplicationMap:
        """The old units in place, each extra unit a copy of a uniformly drawn old one; shares
        as ``split`` says ("equal", or "random" positive weights)."""
        extra = torch.randint(0, old, (new - old,), generator=generator).tolist()
        source = tuple(range(old)) + tuple(extra)
        return cls(old, new, source, _fractions(source, old, split, generator))

    @classmethod
    def uniform(
        cls, old: int, new: int, generator: torch.Generator | None = None, split: str = "equal"
    ) -> ReplicationMap:
        """Every unit replicated new/old times: g(j) = j mod old."""
        source = tuple(j % old for j in range(new))
        return cls(old, new, source, _fractions(source, old, split, generator))

    @cached_property
    def _fraction_tensor(self) -> torch.Tensor:
        if self.fractions is not None:
            return torch.tensor(self.fractions, dtype=torch.float64)
        c = self.count_tensor().double()
        return 1.0 / c[self.source_tensor()]

    def fraction_tensor(self) -> torch.Tensor:
        """Per new unit, its share of the source unit (1/c for an equal split)."""
        return self._fraction_tensor

    @cached_property
    def counts(self) -> tuple[int, ...]:
        """c(i) = |{j : g(j) = i}|."""
        c = [0] * self.old
        for s in self.source:
            c[s] += 1
        return tuple(c)

    def source_tensor(self) -> torch.Tensor:
        """``source`` as a long tensor (cached)."""
        return self._source_tensor

    @cached_property
    def _source_tensor(self) -> torch.Tensor:
        return torch.tensor(self.source, dtype=torch.long)

    def count_tensor(self) -> torch.Tensor:
        """``counts`` as a long tensor (cached)."""
        return self._count_tensor

    @cached_property
    def _count_tensor(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.long)


def _fractions(
    source: tuple[int, ...], old: int, split: str, generator: torch.Generator | None
) -> tuple[float, ...] | None:
    """Shares for ``split="random"``: each unit's copies split it by random positive weights
    (between 1 and 3 before normalising, so no copy starts near zero) that sum to one."""
    if split == "equal":
        return None
    if split != "random":
        raise InputError(f"split must be 'equal' or 'random', got {split!r}")
    weights = (
        1.0 + 2.0 * torch.rand(len(source), generator=generator, dtype=torch.float64)
    ).tolist()
    totals = [0.0] * old
    for s, w in zip(source, weights):
        totals[s] += w
    return tuple(w / totals[s] for s, w in zip(source, weights))
