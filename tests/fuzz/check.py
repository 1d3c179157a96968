"""The properties the fuzzer checks on one random model.

"Never silently wrong": every call either returns a student that computes the teacher's
function (max relative error within the dtype's tolerance) or raises a ``fxgrow.FxgrowError``
whose message names a node, module or group of the model.  Anything else is a failure:

* ``wrong``    -- a student that differs from the teacher (a ``PreservationError`` from
  ``verify`` counts too: the analysis should have refused);
* ``crash``    -- an exception that is not a ``FxgrowError`` (shape errors, asserts ...);
* ``unnamed``  -- a refusal whose message names nothing in the model;
* ``mutated``  -- the teacher's parameters, buffers or train/eval flags changed;
* ``probe``    -- the numerical symmetry probe contradicts the analysis (see ``symmetry_probe``).

The calls: analyze; widen by a random factor (split "equal" or "random"), then widen that
student again, and rebuild it from its plan read back from JSON (bit for bit); widen with
growing outputs; widen one random group (or one of its modules) to a random width; widen every
widenable group on its own; deepen (identity after a ReLU and after a random node, residual
after a random node, a copy of a residual block) and grow a residual stage (with and without
widening); and the symmetry probe.

``check_program`` runs every check on a program and returns the failures; choices that are not
part of the program (factor, which group, where to deepen) derive from ``program.seed``, so a
program alone reproduces a failure.
"""

from __future__ import annotations

import copy
import random
import re
import traceback
from dataclasses import dataclass, field

import torch
import torch.fx
from torch.utils import _pytree as pytree

import fxgrow
from fxgrow.analysis.context import CONSUME, PRODUCE, SCALE
from fxgrow.analysis.layout import Atom, Fixed, Stack, Zip
from fxgrow.analysis.values import TensorInfo
from fxgrow.rewrite import apply

from .archs import FuzzBlock, Program, build

TOL = {torch.float64: 1e-9, torch.float32: 1e-5}


@dataclass(frozen=True)
class Failure:
    kind: str  # wrong | crash | unnamed | mutated | probe
    action: str  # what was being done ("widen factor=1.5", "deepen identity after relu" ...)
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.action}: {self.detail}"


@dataclass
class Report:
    """What one program gave: failures, and counts of exact students and named refusals."""

    failures: list
    exact: int = 0
    refused: int = 0
    probed: int = 0
    notes: list = field(default_factory=list)  # known message issues (see KNOWN_UNNAMED)
    outcomes: dict = field(default_factory=dict)  # (call, "exact" | "refused") -> count
    refusals: list = field(default_factory=list)  # (call, message) of each named refusal

    def count(self, action: str, outcome: str) -> None:
        key = (action_kind(action), outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


_KINDS = [
    ("widen the student again", "widen the student again"),
    ("widen factor=2 outputs", "widen, growing outputs"),
    ("widen factor", "widen factor"),
    ("widen widths", "widen widths={name: w}"),
    ("widen group", "widen one group alone"),
    ("deepen identity after relu", "deepen identity after a ReLU"),
    ("deepen identity", "deepen identity after a random node"),
    ("deepen residual", "deepen residual"),
    ("deepen block", "deepen block"),
    ("grow", "grow blocks (and width)"),
    ("analyze", "analyze"),
]


def action_kind(action: str) -> str:
    return next((k for prefix, k in _KINDS if action.startswith(prefix)), action.split()[0])


# Refusals whose message does not name the node although the user named it in the call; they
# are correct refusals with a message to improve, reported in docs/robustness.md, and listed
# as notes rather than failures.
KNOWN_UNNAMED: list[re.Pattern] = []


# -- helpers --------------------------------------------------------------------------------
def _names(gm: torch.fx.GraphModule, analysis=None) -> set[str]:
    names = {n.name for n in gm.graph.nodes if n.op not in ("placeholder", "output")}
    names |= {str(n.target) for n in gm.graph.nodes if n.op in ("call_module", "get_attr")}
    for p, _ in [*gm.named_parameters(), *gm.named_buffers()]:
        names.add(p)
        names.add(p.rpartition(".")[0])
    if analysis is not None:
        names |= {g.name for g in analysis.all_groups}
    return {n for n in names if n}


def names_something(message: str, names: set[str]) -> bool:
    """The message mentions one of ``names`` as a whole word (dots allowed inside)."""
    for n in names:
        if re.search(r"(?<![\w.])" + re.escape(n) + r"(?![\w])", message):
            return True
    return False


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model: torch.nn.Module, before: dict, flags: list) -> str | None:
    after = model.state_dict()
    if before.keys() != after.keys():
        return "state_dict keys changed"
    for k, v in before.items():
        if not torch.equal(v, after[k]):
            return f"teacher tensor {k} changed"
    if flags != [m.training for m in model.modules()]:
        return "train/eval flags changed"
    return None


class Checker:
    """Runs fxgrow calls on one model and records what happened."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.model, self.x = build(program)
        self.dtype = getattr(torch, program.dtype)
        self.tol = TOL[self.dtype]
        self.rng = random.Random(program.seed)
        self.report = Report([])
        self.names = _names(fxgrow.trace(self.model)) | {
            name for name, _ in self.model.named_modules() if name
        }

    def fail(self, kind: str, action: str, detail: str) -> None:
        self.report.failures.append(Failure(kind, action, detail))

    def attempt(self, action: str, fn, compare: bool = True):
        """Run ``fn`` (returns a student); classify its outcome."""
        before, flags = _state(self.model), [m.training for m in self.model.modules()]
        try:
            student = fn()
        except fxgrow.PreservationError as e:
            self.fail("wrong", action, str(e))
            return None
        except fxgrow.FxgrowError as e:
            message = f"{type(e).__name__}: {e}"
            if names_something(str(e), self.names):
                self.report.refused += 1
                self.report.count(action, "refused")
                self.report.refusals.append((action_kind(action), message))
            elif any(k.search(message) for k in KNOWN_UNNAMED):
                self.report.refused += 1
                self.report.count(action, "refused")
                self.report.notes.append(Failure("unnamed", action, message))
            else:
                self.fail("unnamed", action, message)
            return None
        except Exception as e:
            tb = traceback.format_exc(limit=-3)
            self.fail("crash", action, f"{type(e).__name__}: {e}\n{tb}")
            return None
        finally:
            changed = _unchanged(self.model, before, flags)
            if changed:
                self.fail("mutated", action, changed)
        if compare and student is not None:
            self.exact_or_fail(action, student)
        elif student is not None:
            self.report.count(action, "ok")
        return student

    def guard(self, action: str, fn):
        """Run a check that must not raise; an exception is a crash."""
        try:
            return fn()
        except Exception as e:
            tb = traceback.format_exc(limit=-3)
            self.fail("crash", action, f"{type(e).__name__}: {e}\n{tb}")
            return None

    def exact_or_fail(self, action: str, student) -> None:
        try:
            err = fxgrow.compare(self.model, student, self.x)
        except Exception as e:
            self.fail("crash", action, f"student does not run: {type(e).__name__}: {e}")
            return
        if err.max_rel <= self.tol:
            self.report.exact += 1
            self.report.count(action, "exact")
            for p in [*student.parameters(), *student.buffers()]:
                if p.is_floating_point() and (p.dtype != self.dtype or p.device != self.x.device):
                    self.fail("wrong", action, f"student tensor of dtype {p.dtype} on {p.device}")
                    break
        else:
            self.fail("wrong", action, str(err))


# -- the checks ----------------------------------------------------------------------------------
def check_program(
    program: Program, *, probe: bool = True, per_group: bool = True, deepen: bool = True
) -> Report:
    ck = Checker(program)
    model, x, rng = ck.model, ck.x, ck.rng

    analysis = ck.attempt("analyze", lambda: fxgrow.analyze(model, x), compare=False)
    if analysis is None:
        return ck.report
    ck.names |= _names(analysis.gm, analysis)

    factor = rng.choice([1.25, 1.5, 2, 2.5, 3, rng.uniform(1, 3)])
    split = rng.choice(["equal", "random"])
    student = ck.attempt(
        f"widen factor={factor:g} split={split!r}",
        lambda: fxgrow.widen(model, x, factor=factor, seed=program.seed, split=split, verify=False),
    )
    if student is not None:
        # the student is a GraphModule with rewritten sizes: growing it again stays exact
        ck.attempt(
            "widen the student again (factor=1.5)",
            lambda: fxgrow.widen(student, x, factor=1.5, seed=program.seed + 1, verify=False),
        )
        ck.guard(
            "plan JSON round trip",
            lambda: same_student_from_json(
                ck, analysis, student, factor=factor, seed=program.seed, split=split
            ),
        )

    ck.attempt(
        "widen factor=2 outputs='grow'",
        lambda: fxgrow.widen(model, x, factor=2, outputs="grow", seed=program.seed, verify=False),
    )

    groups = analysis.groups
    if groups:
        g = rng.choice(groups)
        name = rng.choice([g.name, *g.modules]) if g.modules else g.name
        w = rng.randint(g.width, 3 * g.width + 1)
        ck.attempt(
            f"widen widths={{{name!r}: {w}}}",
            lambda: fxgrow.widen(model, x, widths={name: w}, verify=False),
        )

    if per_group:
        each_group(ck, analysis)
    if deepen:
        deepen_checks(ck, analysis)
    if probe:
        for msg in ck.guard("symmetry probe", lambda: symmetry_probe(analysis, rng)) or ():
            ck.fail("probe", "symmetry probe", msg)
        ck.report.probed += 1
    return ck.report


def same_student_from_json(ck: Checker, analysis, student, **options) -> None:
    """The plan written to JSON and read back gives the same student, bit for bit."""
    plan = fxgrow.plan(analysis, **options)
    again = fxgrow.WidenPlan.from_json(plan.to_json())
    same = fxgrow.widen(ck.model, ck.x, plan=again, verify=False)
    if again != plan or any(
        not torch.equal(a, b)
        for a, b in zip(student.state_dict().values(), same.state_dict().values())
    ):
        ck.fail("wrong", "plan JSON round trip", "the student from the re-read plan differs")


def each_group(ck: Checker, analysis) -> None:
    """Widen every widenable group on its own (a width it accepts): each must be exact, so a
    coupling the analysis missed between two groups shows up here."""
    uniform = {r for lay, _ in analysis.state.uniform for r in analysis.state.spaces.roots(lay)}
    for g in analysis.widenable:
        k = ck.rng.randint(2, 3) if g.root in uniform else None
        new = g.width * k if k else (g.unit + ck.rng.randint(1, 2 * g.unit)) * g.multiplicity
        action = f"widen group {g.name!r} alone to {new}"

        def run(g=g, new=new):
            plan = fxgrow.plan(analysis, widths={g.name: new}, seed=ck.program.seed)
            return apply(analysis, plan)

        ck.attempt(action, run)


def deepen_checks(ck: Checker, analysis) -> None:
    """deepen(kind="identity") after a ReLU and after a random node (refused after a
    non-idempotent activation), kind="residual" after a random node."""
    gm = analysis.gm
    vals = analysis.state.vals
    relus = [n for n in gm.graph.nodes if _is_relu(gm, n)]
    cands = [
        n
        for n in gm.graph.nodes
        if n.op in ("call_module", "call_function", "call_method")
        and isinstance(vals.get(n), torch.Tensor)
        and vals[n].is_floating_point()
        and vals[n].dim() in (2, 3, 4)
    ]
    for pool in (relus, cands):  # after a ReLU, and after any node (refused after GELU ...)
        if pool:
            n = ck.rng.choice(pool)
            ck.attempt(
                f"deepen identity after {n.name}",
                lambda n=n: fxgrow.deepen(
                    ck.model, ck.x, after=n.name, kind="identity", verify=False
                ),
            )
    if cands:
        n = ck.rng.choice(cands)
        ck.attempt(
            f"deepen residual after {n.name}",
            lambda: fxgrow.deepen(
                ck.model, ck.x, after=n.name, kind="residual", verify=False, seed=ck.program.seed
            ),
        )
    blocks = [name for name, m in ck.model.named_modules() if isinstance(m, FuzzBlock)]
    if blocks:
        b = ck.rng.choice(blocks)
        ck.attempt(
            f"deepen block {b}",
            lambda: fxgrow.deepen(ck.model, ck.x, after=b, kind="block", verify=False),
        )
        stages = ck.guard("stages", lambda: fxgrow.stages(ck.model, ck.x)) or []
        if stages:
            st = ck.rng.choice(stages)
            width = ck.rng.choice([None, 1.5])
            ck.attempt(
                f"grow blocks={{{st.name!r}: {st.count + 1}}} width={width}",
                lambda: fxgrow.grow(
                    ck.model,
                    ck.x,
                    blocks={st.name: st.count + 1},
                    width=width,
                    seed=ck.program.seed,
                    verify=False,
                ),
            )


def _is_relu(gm, n) -> bool:
    if n.op == "call_module":
        return type(gm.get_submodule(n.target)) is torch.nn.ReLU
    if n.op == "call_function":
        return n.target in (torch.relu, torch.nn.functional.relu)
    return n.op == "call_method" and n.target == "relu"


# -- the numerical symmetry probe -------------------------------------------------------------
def labels(sp, layout) -> list[tuple]:
    """For each position of ``layout``: its components, ``(atom id, occurrence, index)`` for a
    channel unit (the same atom twice in one layout -- cat([x, x]) -- gives two occurrences)
    and ``("fixed", position)`` for a fixed one; a merged axis has one component per factor."""
    out: list[tuple] = []
    seen: dict = {}
    for seg in sp.resolve(layout):
        base = len(out)
        if isinstance(seg, Fixed):
            out += [(("fixed", base + k),) for k in range(seg.size)]
        elif isinstance(seg, Atom):
            occ = seen[seg.id] = seen.get(seg.id, -1) + 1
            out += [((seg.id, occ, k),) for k in range(sp.width[seg.id])]
        elif isinstance(seg, Zip):  # part k's unit p at p g + k (parts of equal size)
            occ = seen[seg] = seen.get(seg, -1) + 1
            parts = [labels(sp, part) for part in seg.parts]
            out += [
                parts[k][p] + (("fixed", "zip part", k, occ),)
                for p in range(len(parts[0]))
                for k in range(len(parts))
            ]
        elif isinstance(seg, Stack):  # rows laid end to end (a shuffle's first reshape)
            occ = seen[seg] = seen.get(seg, -1) + 1
            out += [
                lab + (("fixed", "stack row", k, occ),)
                for k, row in enumerate(seg.rows)
                for lab in labels(sp, row)
            ]
        else:  # the same merged segment twice in one layout: tell the occurrences apart
            occ = seen[seg] = seen.get(seg, -1) + 1
            outer, inner = labels(sp, seg.outer), labels(sp, seg.inner)
            out += [o + i + (("fixed", "occurrence", occ),) for o in outer for i in inner]
    return out


def _pairs(sp, layout, root: int, i: int, j: int) -> list[tuple[int, int]]:
    """Position pairs (p, q) where q holds a copy of p once unit j of ``root`` copies unit i:
    p's label is q's with every component "unit j of root" (a merged axis can hold the
    group in several factors) replaced by "unit i"."""
    labs = labels(sp, layout)
    where = {lab: pos for pos, lab in enumerate(labs)}
    pairs = []
    for q, lab in enumerate(labs):
        src = tuple(
            (c[0], c[1], i) if c[0] != "fixed" and c[2] == j and sp.find(c[0]) == root else c
            for c in lab
        )
        if src != lab and src in where:
            pairs.append((where[src], q))
    return pairs


def symmetry_probe(analysis, rng: random.Random) -> list[str]:
    """An oracle for the grouping that does not use fxgrow's rewrite.

    For each widenable group and two of its units i != j: make unit j a copy of unit i in
    every producer and per-channel member of the group (weights, biases, norm parameters and
    statistics; consumers untouched), run the model, and check that at every node, on every
    axis, each position the analysis labels "unit j" holds the value of the position it
    labels "unit i" (same segment, same other factors).  If the analysis left a producer out of the group, or put a
    segment of a cat/split at the wrong offset, the copy is incomplete or the labels point
    at different channels, and some node shows different values: the node is reported."""
    state, sp = analysis.state, analysis.state.spaces
    problems: list[str] = []
    live: set[str] = set()
    for n in analysis.gm.graph.nodes:
        if n.op == "placeholder" or any(a.name in live for a in n.all_input_nodes):
            live.add(n.name)
    for g in analysis.widenable:
        r = g.root
        if sp.width[r] < 2:
            continue
        i, j = rng.sample(range(sp.width[r]), 2)
        gm = copy.deepcopy(analysis.gm)
        tensors = {
            **dict(gm.named_parameters(remove_duplicate=False)),
            **dict(gm.named_buffers(remove_duplicate=False)),
        }
        with torch.no_grad():
            for pa in state.params.values():
                if CONSUME in pa.roles or not ({PRODUCE, SCALE} & pa.roles):
                    continue
                t = tensors[pa.target]
                src = list(range(t.shape[pa.axis]))
                for p, q in _pairs(sp, pa.layout, r, i, j):
                    src[q] = p
                t.copy_(t.index_select(pa.axis, torch.tensor(src)))
        values = _run_all(gm, analysis.example_inputs)
        dtypes = {p.dtype for p in analysis.gm.parameters() if p.is_floating_point()}
        tol = 1e-9 if dtypes == {torch.float64} else 1e-5
        for node in gm.graph.nodes:
            if node.name not in live:
                continue  # parameters and what is computed from them alone
            info = state.values.get(_teacher_node(analysis, node.name))
            val = values.get(node.name)
            for inf, v in zip(
                pytree.tree_leaves(info, is_leaf=lambda z: isinstance(z, TensorInfo)),
                pytree.tree_leaves(val),
            ):
                if (
                    not isinstance(inf, TensorInfo)
                    or not isinstance(v, torch.Tensor)
                    or tuple(v.shape) != inf.shape
                    or not v.is_floating_point()
                ):
                    continue
                for axis, lay in enumerate(inf.layouts):
                    for p, q in _pairs(sp, lay, r, i, j):
                        a, b = v.select(axis, p), v.select(axis, q)
                        scale = float(v.abs().max()) if v.numel() else 0.0
                        diff = float((a - b).abs().max()) if a.numel() else 0.0
                        if diff > tol * max(scale, 1.0):
                            problems.append(
                                f"group {g.name!r}: after making unit {j} a copy of unit {i} "
                                f"in the group's producers, node {node.name!r} axis {axis} "
                                f"positions {p} and {q} (labelled as those units) differ by "
                                f"{diff:.3g}"
                            )
                            break
                    else:
                        continue
                    break
            if problems and problems[-1].startswith(f"group {g.name!r}"):
                break
    return problems


def _teacher_node(analysis, name: str):
    for n in analysis.gm.graph.nodes:
        if n.name == name:
            return n
    return None


def _run_all(gm: torch.fx.GraphModule, inputs: tuple) -> dict:
    found: dict = {}

    class Catch(torch.fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            found[n.name] = pytree.tree_map(
                lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, r
            )
            return r

    with torch.no_grad():
        Catch(gm).run(*inputs)
    return found
