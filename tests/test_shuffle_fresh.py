"""Which ShuffleNet chains admit an exact student whose new units are fresh (``init="zero"``:
own fan-in, zero fan-out) rather than replicas?  A closed form, checked against an exhaustive
search, and what it says about shufflenet_v2_x0_5's stage3 (which no replicating student
widens: tests/test_rules.py)."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import replace

import pytest
import torch
import torchvision
from helpers import shuffle_side_sequences
from test_rules import ShuffleChain, f64, rand

import fxgrow
from fxgrow.errors import BlockedGroupError, InputError, WidthError
from fxgrow.planning.estimate import estimate
from fxgrow.planning.placement import place


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


def test_shufflenet_stage3_trunk_refused_by_replication():
    """Replication refuses stage3's trunk, naming the chunk and why; ``factor=`` with
    init="zero" leaves the trunk alone (placement is asked for by name), and the student stays
    exact.  Asked for by name, replication and gradmax are refused; init="zero" places fresh
    units (test below)."""
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
    for init, hint in (("replicate", None), ("gradmax", "only init='zero' places")):
        with pytest.raises(BlockedGroupError) as e:
            fxgrow.plan(a, widths={"stage3.0.branch1.2[0:1]": 2}, init=init)
        assert "a replica would land on the wrong side" in str(e.value)
        assert "init=" not in str(e.value) if hint is None else hint in str(e.value)
    assert fxgrow.plan(a, widths={"stage3.0.branch1.2[0:1]": 2}, init="zero").placements


def _stage3_student():
    torch.manual_seed(0)
    m = torchvision.models.shufflenet_v2_x0_5(weights=None).eval().double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    return m, x, fxgrow.analyze(m, x)


def test_shufflenet_stage3_trunk_grows_with_fresh_units():
    m, x, _ = _stage3_student()
    s = fxgrow.widen(m, x, widths={"stage3.0.branch1.2[0:1]": 2}, init="zero", verify=False)
    with torch.no_grad():
        t, y = m(x), s(x)
    assert float((t - y).abs().max() / t.abs().max()) <= 1e-10
    assert s.get_submodule("stage3.0.branch1.2").out_channels in range(57, 65)


def test_stage3_placement_is_the_closed_forms_narrowest_student():
    """Every producer of the trunk (stage3.0's two branches, stage3.1-7's branch2) grows from
    48 to 57, the narrowest width the closed form admits; each keeps its 48 units once, the
    other 9 positions fresh; the plan survives JSON and rebuilds the same student."""
    m, x, a = _stage3_student()
    plan = fxgrow.plan(a, widths={"stage3.0.branch1.2[0:1]": 2}, init="zero")
    assert plan.changes == ()
    assert [p.node for p in plan.placements] == ["stage3_0_branch1_2", "stage3_0_branch2_5"] + [
        f"stage3_{k}_branch2_5" for k in range(1, 8)
    ]
    assert min(w for w in range(49, 97) if _fresh_sequences_admit(48, 7, w)) == 57
    for p in plan.placements:
        assert (p.old, p.new) == (48, 57) and p.source.count(-1) == 9
    again = fxgrow.WidenPlan.from_json(plan.to_json())
    assert again == plan
    s1 = fxgrow.widen(m, x, plan=plan)
    s2 = fxgrow.widen(m, x, plan=again)
    assert fxgrow.growth_record(s1).error.max_rel <= 1e-10
    assert estimate(a, plan).student_params == sum(t.numel() for t in s1.parameters())
    for (k1, v1), (k2, v2) in zip(s1.state_dict().items(), s2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_stage3_placement_skips_the_widths_the_closed_form_refuses():
    """Asked for 17 more units per half (65), placement finds none of 65-96 (the closed
    form refuses them all, 2x included) and grows the trunk to 97, exactly."""
    m, x, a = _stage3_student()
    assert min(w for w in range(65, 193) if _fresh_sequences_admit(48, 7, w)) == 97
    plan = fxgrow.plan(a, widths={"stage3.0.branch1.2[0:1]": 18}, init="zero")
    assert {(p.old, p.new) for p in plan.placements} == {(48, 97)}
    s = fxgrow.widen(m, x, plan=plan)
    assert fxgrow.growth_record(s).error.max_rel <= 1e-10
    assert s.get_submodule("stage4.0.branch2.0").in_channels == 2 * 97


def test_stage3_fresh_units_have_fan_in_and_learn():
    """Fresh rows of each producer are random (non-zero), their columns in every consumer
    (stage3.1-7's branch2.0, stage4.0's two branches) zero; one SGD step moves those columns
    (the fresh values are non-zero), the next the fresh rows."""
    m, x, a = _stage3_student()
    plan = fxgrow.plan(a, widths={"stage3.0.branch1.2[0:1]": 2}, init="zero")
    s = fxgrow.widen(m, x, plan=plan)
    fresh = torch.tensor([u == -1 for u in plan.placements[0].source])
    rows = s.get_submodule("stage3.0.branch1.2").weight
    assert rows[fresh].abs().flatten(1).sum(1).min() > 0
    consumers = [f"stage3.{k}.branch2.0" for k in range(1, 8)]
    consumers += ["stage4.0.branch1.2", "stage4.0.branch2.0"]
    zero_cols = {}
    for name in consumers:
        w = s.get_submodule(name).weight
        cols = w.abs().sum((0, 2, 3)) == 0
        assert int(cols.sum()) in (9, 18), name  # stage4.0 reads both halves
        zero_cols[name] = cols
    fan_in0 = rows[fresh].detach().clone()
    s.train()
    opt = torch.optim.SGD(s.parameters(), lr=0.1)
    xs = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    for step in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(s(xs), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
        if step == 0:
            for name, cols in zero_cols.items():
                w = s.get_submodule(name).weight
                assert w[:, cols].abs().max() > 0, name
            assert torch.equal(rows[fresh], fan_in0)
    assert not torch.equal(rows[fresh], fan_in0)


def test_a_placement_that_moves_a_unit_is_refused():
    """A hand-edited plan whose placement swaps a kept unit with a fresh position that the
    shuffles send elsewhere is refused before any tensor is built."""
    m, x, a = _stage3_student()
    plan = fxgrow.plan(a, widths={"stage3.0.branch1.2[0:1]": 2}, init="zero")
    p = plan.placements[0]
    source = list(p.source)
    j = source.index(-1)
    source[0], source[j] = source[j], source[0]  # unit 0 to position 3: another destiny
    bad = replace(plan, placements=(replace(p, source=tuple(source)), *plan.placements[1:]))
    with pytest.raises(WidthError, match="does not keep the teacher's units"):
        fxgrow.widen(m, x, plan=bad)
    with pytest.raises(InputError, match="each of its 48 units once"):
        replace(p, source=(0,) * 57)


@pytest.mark.parametrize("form", ["view-transpose-view", "module"])
@pytest.mark.parametrize("c,blocks,growth", [(3, 3, 1), (3, 3, 2), (4, 3, 1), (5, 3, 1)])
def test_shuffle_chain_placement_matches_the_closed_form(form, c, blocks, growth):
    """On ShuffleChain (tests/test_rules.py), where no replicating student exists, init="zero"
    grows the branches to the narrowest width >= c + growth that the closed form admits, and
    the student is exact; with no such width within the search's limit it is refused."""
    m, x = f64(ShuffleChain(c, blocks, form)), rand(2, 2, 2, 2)
    a = fxgrow.analyze(m, x)
    g = next(
        g
        for g in a.all_groups
        if any(mb.module == "a" and mb.role == "produce" for mb in g.members)
    )
    assert not g.widenable
    admitted = [w for w in range(c + growth, 4 * c + 1) if _fresh_sequences_admit(c, blocks, w)]
    s = fxgrow.widen(m, x, widths={g.name: g.width + growth}, init="zero")
    assert fxgrow.growth_record(s).error.max_rel <= 1e-10
    assert s.a.out_channels == s.b.out_channels == admitted[0]
    assert [s.get_submodule(f"br.{k}").out_channels for k in range(blocks)] == [
        admitted[0]
    ] * blocks
    if admitted[0] > 2 * c + growth:  # none in growth .. growth + c: refused at that limit
        with pytest.raises(WidthError, match="keeps every teacher unit on its path"):
            place(a, g.root, growth, limit=2)


class _LiteralShuffleChain(ShuffleChain):
    """ShuffleChain whose shuffle spells out every size (batch, spatial, channels)."""

    def __init__(self) -> None:
        super().__init__(3, 3)
        self.shuffle = lambda t: t.view(2, 2, 3, 2, 2).transpose(1, 2).reshape(2, 6, 2, 2)


def test_placement_refuses_what_it_cannot_follow():
    """Constant sizes in the shuffle's views (the label run cannot replay them), a narrower
    width, and a hand-made plan naming a node that is no producer of the chain: clear
    errors, no student."""
    m, x = f64(_LiteralShuffleChain()), rand(2, 2, 2, 2)
    a = fxgrow.analyze(m, x)
    g = next(
        g
        for g in a.all_groups
        if any(mb.module == "a" and mb.role == "produce" for mb in g.members)
    )
    with pytest.raises(WidthError, match="cannot follow this channel shuffle chain's data"):
        fxgrow.plan(a, widths={g.name: g.width + 1}, init="zero")
    m, x = f64(ShuffleChain(3, 3)), rand(2, 2, 2, 2)
    a = fxgrow.analyze(m, x)
    with pytest.raises(WidthError, match="fxgrow only grows"):
        fxgrow.plan(a, widths={g.name: g.width - 1}, init="zero")
    plan = fxgrow.plan(a, widths={g.name: g.width + 1}, init="zero")
    first = plan.placements[0]
    assert first.node == "a" and (first.old, first.new) == (3, 4)
    wrong = replace(plan, placements=(replace(first, node="relu"), *plan.placements[1:]))
    with pytest.raises(WidthError, match="does not place the 3 units of 'a'"):
        fxgrow.widen(m, x, plan=wrong)


class _HeadlessShuffleChain(ShuffleChain):
    """ShuffleChain returning the shuffled tensor itself: the chain reaches the output."""

    def forward(self, x):
        t = self.shuffle(torch.cat([self.a(x), self.b(x)], 1))
        for br in self.br:
            x1, x2 = t.chunk(2, dim=1)
            t = self.shuffle(torch.cat([x1, torch.relu(br(x2))], 1))
        return t


def _chain_group(a):
    return next(
        g
        for g in a.all_groups
        if any(mb.module == "a" and mb.role == "produce" for mb in g.members)
    )


def test_placement_far_past_the_teachers_width():
    """The search starts at the growth asked for: 10 more units on a 3-unit chain (more than
    the 3x the search spans) is placed, and exact."""
    m, x = f64(ShuffleChain(3, 3)), rand(2, 2, 2, 2)
    g = _chain_group(fxgrow.analyze(m, x))
    s = fxgrow.widen(m, x, widths={g.name: g.width + 10}, init="zero")
    assert s.a.out_channels >= 13
    assert fxgrow.growth_record(s).error.max_rel <= 1e-10


def test_placement_refusals_name_the_group_and_bad_plans_are_input_errors():
    """A chain reaching an output that outputs='grow' lets widen is refused at plan time, the
    message naming the group; a plan dict with a malformed placement is an InputError."""
    m, x = f64(_HeadlessShuffleChain(3, 3)), rand(2, 2, 2, 2)
    a = fxgrow.analyze(m, x, outputs="grow")
    g = _chain_group(a)
    with pytest.raises(WidthError, match=re.escape(f"group '{g.name}': this channel shuffle")):
        fxgrow.plan(a, widths={g.name: g.width + 1}, init="zero")
    m, x = f64(ShuffleChain(3, 3)), rand(2, 2, 2, 2)
    d = fxgrow.plan(m, x, widths={g.name: g.width + 1}, init="zero").to_dict()
    for broken in (
        dict(d, placements=[dict(d["placements"][0], source=["x", 0, 1, 2])]),
        dict(d, placements=[{k: v for k, v in d["placements"][0].items() if k != "source"}]),
        dict(d, placements="abc"),
        dict(d, changes=[{"group": "a"}]),
    ):
        with pytest.raises(InputError):
            fxgrow.planning.WidenPlan.from_dict(broken)
