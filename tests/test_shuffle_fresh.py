"""Which ShuffleNet chains admit an exact student whose new units are fresh (``init="zero"``:
own fan-in, zero fan-out) rather than replicas?  A closed form, checked against an exhaustive
search, and what it says about shufflenet_v2_x0_5's stage3 (which no replicating student
widens: tests/test_rules.py)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
import torchvision
from helpers import shuffle_side_sequences

import fxgrow
from fxgrow.errors import BlockedGroupError


def _shuffle(seq: list) -> list:
    h = len(seq) // 2
    return [u for j in range(h) for u in (seq[j], seq[h + j])]


def _fresh_students_exist(c: int, blocks: int, width: int) -> bool:
    """Exhaustive search on ShuffleChain (tests/test_rules.py): the branch outputs a, b have
    ``width`` channels; every teacher unit of each producer sits at one student position (its
    rows and columns copied, share 1), every other position is fresh (None: any fan-in, zero
    fan-out).  Each chunk must send exactly the teacher's units of each side to that side;
    fresh units may go either way (their consumer columns are zero)."""

    def placements(units: list, n: int):
        for pos in itertools.permutations(range(n), len(units)):
            seq: list = [None] * n
            for u, p in zip(units, pos):
                seq[p] = u
            yield seq

    t = _shuffle([f"a{i}" for i in range(c)] + [f"b{i}" for i in range(c)])
    sides = []
    for k in range(blocks):
        sides.append(set(t[:c]))
        t = _shuffle(t[:c] + [f"c{k}.{i}" for i in range(c)])

    def rest(t: list, k: int) -> bool:
        if k == blocks:
            return True
        n = len(t) // 2
        if set(t[:n]) - {None} != sides[k] or set(t[n:]) & sides[k]:
            return False
        return any(
            rest(_shuffle(t[:n] + cs), k + 1)
            for cs in placements([f"c{k}.{i}" for i in range(c)], n)
        )

    return any(
        rest(_shuffle(a + b), 0)
        for a in placements([f"a{i}" for i in range(c)], width)
        for b in placements([f"b{i}" for i in range(c)], width)
    )


def _fresh_sequences_admit(c: int, blocks: int, width: int) -> bool:
    """Closed form: each channel position of each producer meets every later chunk on a fixed
    side (its *side sequence*; the widths fix the positions).  A fresh student exists iff, per
    producer, the student has at least as many positions of each side sequence as the teacher
    has units of it (replicas need more: every student sequence must be a teacher's)."""
    teacher, student = shuffle_side_sequences(c, blocks), shuffle_side_sequences(width, blocks)
    for producer in ["a", "b"] + [f"c{k}" for k in range(blocks)]:
        have = Counter(tuple(q) for (p, _), q in teacher.items() if p == producer)
        get = Counter(tuple(q) for (p, _), q in student.items() if p == producer)
        if any(get[q] < n for q, n in have.items()):
            return False
    return True


@pytest.mark.parametrize("c,blocks", [(2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 2)])
def test_fresh_side_sequences_agree_with_exhaustive_search(c, blocks):
    for w in (c + 1, c + 2):
        assert _fresh_sequences_admit(c, blocks, w) == _fresh_students_exist(c, blocks, w), w


def test_fresh_students_exist_where_replicas_do_not():
    """(3 channels, 3 blocks): no replicating student at any width up to 2x (the closed form
    of tests/test_rules.py), a fresh one at 4 but not at 5 -- fresh units lift some refusals,
    at some widths only."""
    assert [w for w in (4, 5) if _fresh_students_exist(3, 3, w)] == [4]


def test_shufflenet_stage3_fresh_widths():
    """shufflenet_v2_x0_5's stage3 trunk (48 channels per half, 7 chunks) has a fresh student
    at 57-64 channels per half and at every width from 97 (checked to 4x), but not at 2x (96)
    nor 1.5x (72); stage2 and stage4 at every width."""
    ok = [w for w in range(49, 4 * 48 + 1) if _fresh_sequences_admit(48, 7, w)]
    assert ok == list(range(57, 65)) + list(range(97, 193))
    assert all(_fresh_sequences_admit(24, 3, w) for w in range(25, 97))
    assert all(_fresh_sequences_admit(96, 3, w) for w in range(97, 193))


def test_shufflenet_stage3_trunk_refused_under_both_inits():
    """Replication refuses stage3's trunk, naming the chunk and why; with init="zero" the same
    groups are held (the layout algebra places new units only by appending to each channel
    space, which no trunk width admits), and the student stays exact."""
    torch.manual_seed(0)
    m = torchvision.models.shufflenet_v2_x0_5(weights=None).eval().double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    trunk = [g for g in a.all_groups if g.name.startswith("stage3.0.branch1.2")]
    assert trunk and not any(g.widenable for g in trunk)
    assert any("must grow alike" in str(b) and "chunk" in b.node for g in trunk for b in g.blockers)
    s = fxgrow.widen(m, x, factor=2.0, init="zero", verify=False)
    with torch.no_grad():
        t, y = m(x), s(x)
    assert float((t - y).abs().max() / t.abs().max()) <= 1e-10
    assert s.get_submodule("stage3.0.branch1.2").out_channels == 48  # the trunk kept its width
    assert s.get_submodule("stage3.0.branch2.0").out_channels == 96  # branch hidden grew
    for init, extra in (("replicate", False), ("zero", True)):  # asked by name: refused
        with pytest.raises(BlockedGroupError) as e:
            fxgrow.plan(a, widths={"stage3.0.branch1.2[0:1]": 2}, init=init)
        assert "a replica would land on the wrong side" in str(e.value)
        assert ("init='zero' does not lift this yet" in str(e.value)) == extra


@pytest.mark.xfail(
    strict=True,
    reason="growable zero-width atoms in the layout algebra are not "
    "implemented: fresh units are only appended to existing channel spaces",
)
def test_shufflenet_stage3_trunk_grows_with_fresh_units():
    torch.manual_seed(0)
    m = torchvision.models.shufflenet_v2_x0_5(weights=None).eval().double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    s = fxgrow.widen(m, x, widths={"stage3.0.branch1.2[0:1]": 2}, init="zero", verify=False)
    with torch.no_grad():
        t, y = m(x), s(x)
    assert float((t - y).abs().max() / t.abs().max()) <= 1e-10
    assert s.get_submodule("stage3.0.branch1.2").out_channels in range(57, 65)
