"""A growth as a per-tensor plan: every student tensor named with the teacher tensor it comes
from and how (unchanged bytes, a widening recipe, or zeros).

Width comes from a ``WidenPlan`` through ``rewrite.recipe`` (the same functions the in-memory
rewrite runs).  Depth is LLaMA-Pro's block expansion as renaming: the blocks of one residual
stage (``model.layers``) are renumbered, and each inserted block is a copy of a teacher block
with the last layer of every residual branch zeroed (``o_proj`` / ``down_proj`` in a Llama:
the copy computes the identity).  Invariant: a ``StreamPlan`` is made from the analysis of a
model on the meta device and the checkpoint's header alone; applying it needs one teacher
tensor at a time."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..analysis import Analysis
from ..analysis.blocks import Stage, find_stages
from ..errors import InputError, UnknownGroupError, UnsupportedModelError
from ..planning.plan import GroupChange, ReplicationMap, WidenPlan, root_maps
from ..rewrite.block_copy import residual_stream
from ..rewrite.recipe import TensorRecipe, apply_recipe, tensor_recipes
from .errors import CheckpointError


@dataclass(frozen=True)
class TensorSource:
    """Student tensor ``name`` is made from teacher tensor ``source``: its bytes unchanged
    (``recipe`` None), widened by ``recipe``, or (``zero``) zeros of the student's shape."""

    name: str
    source: str
    shape: tuple[int, ...]
    recipe: TensorRecipe | None = None
    zero: bool = False
    folds: tuple[tuple[torch.Tensor, float], ...] = ()  # (scale, shift) after the recipe

    @property
    def unchanged(self) -> bool:
        """True when the student tensor is the teacher's bytes as they are (no recipe, fold or
        zeros)."""
        return self.recipe is None and not self.folds and not self.zero


def make_tensor(
    src: TensorSource, old: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Student tensor ``src`` from its teacher tensor ``old``: the recipe (into ``out`` when
    given: ``apply_recipe``), then each fold ``((t + shift) * scale - shift)`` in float64,
    rounded to the dtype (``hf.fold``'s arithmetic, so a fold made on a graph in memory and
    one made here agree bit for bit)."""
    new = apply_recipe(src.recipe, old, out=out) if src.recipe is not None else old
    for scale, shift in src.folds:
        new = ((new.double() + shift) * scale - shift).to(new.dtype)
    return new


@dataclass(frozen=True)
class StreamPlan:
    """Every student tensor, in the order they are written.  ``layers[j]`` is the teacher
    block that student block j of ``stage`` copies, ``zeroed`` the student blocks that are
    zero copies (None when depth does not change)."""

    tensors: tuple[TensorSource, ...]
    widen: WidenPlan | None = None
    stage: str | None = None
    layers: tuple[int, ...] | None = None
    zeroed: tuple[int, ...] = ()

    def sources(self) -> dict[str, TensorSource]:
        """Student tensor name -> its TensorSource."""
        return {t.name: t for t in self.tensors}


def balanced(plan: WidenPlan, seed: int = 0) -> WidenPlan:
    """``plan`` with each equal-split map replaced by a balanced one: every unit copied
    floor(new/old) or ceil(new/old) times, the extra copies drawn without replacement.  A share
    1/c is exact in bfloat16 / float16 only when c is a power of two; a random map copies some
    units three times even at x1.5 (shares of 1/3), a balanced one never does (1 and 1/2)."""
    gen = torch.Generator().manual_seed(seed + 104729)
    changes = []
    for c in plan.changes:
        m = c.map
        if m.fractions is not None or m.new == m.old:
            changes.append(c)
            continue
        whole, extra = divmod(m.new, m.old)
        picks = torch.randperm(m.old, generator=gen)[:extra].sort().values.tolist()
        source = tuple(j % m.old for j in range(whole * m.old)) + tuple(picks)
        changes.append(
            GroupChange(c.group, c.old_width, c.new_width, ReplicationMap(m.old, m.new, source))
        )
    return WidenPlan(tuple(changes), plan.seed, plan.split, plan.noise, plan.approximate)


def depth_layout(
    teacher: int, student: int, placement: str = "interleave"
) -> list[tuple[int, bool]]:
    """Per student block: (teacher block it copies, whether it is a zero copy).
    ``interleave`` (LLaMA-Pro) puts the k new blocks after evenly spaced teacher blocks (after
    blocks 3, 7, ... when 32 grow to 40); ``append`` puts copies of the last block at the end."""
    if student < teacher:
        raise InputError(f"the stage has {teacher} blocks; fxgrow only grows (asked for {student})")
    extra = student - teacher
    if placement == "append":
        return [(b, False) for b in range(teacher)] + [(teacher - 1, True)] * extra
    if placement != "interleave":
        raise InputError(f"placement must be 'interleave' or 'append', got {placement!r}")
    after = [0] * teacher
    for i in range(extra):
        after[(i + 1) * teacher // extra - 1 if extra <= teacher else i % teacher] += 1
    out: list[tuple[int, bool]] = []
    for b in range(teacher):
        out.append((b, False))
        out += [(b, True)] * after[b]
    return out


def _stage(analysis: Analysis, name: str | None) -> Stage:
    gm = analysis.gm
    stages = find_stages(gm, analysis.state.vals_by_name(gm))
    if name is None:
        if not stages:
            raise UnsupportedModelError("the model has no stage of residual blocks to deepen")
        return max(stages, key=lambda s: s.count)
    for s in stages:
        if s.name == name:
            return s
    raise UnknownGroupError(
        f"no residual stage named {name!r}; stages: {', '.join(s.name for s in stages) or 'none'}"
    )


def tie_folds(
    analysis: Analysis, widen: WidenPlan, dtype: torch.dtype
) -> dict[str, tuple[tuple[torch.Tensor, float], ...]]:
    """Per parameter (canonical name), the scales that compensate widened tied weights.

    A tied table widened along an axis read both as an embedding and as an output projection
    counts each copied unit once per copy at the projection; the in-memory rewrite scales the
    projection's input by the shares (``fxgrow_tie_scale*``) and ``hf.fold`` folds that scale
    into the parameter that makes the input (a final norm's weight).  Here the rewrite runs on
    the meta graph, its scales are made real (in the checkpoint's ``dtype``, as the in-memory
    rewrite makes them in the tensor's), and the folds are recorded, not applied."""
    from ..hf.fold import fold_tie_scales, recording
    from ..planning.index_map import expand
    from ..rewrite.widen import apply

    state, sp = analysis.state, analysis.state.spaces
    maps = root_maps(analysis, widen)
    student = apply(analysis, widen)
    for k, (pa, _) in enumerate(state.tied_contractions):
        name = f"fxgrow_tie_scale{k}"
        if any(r in maps for r in sp.roots(pa.layout)) and hasattr(student, name):
            shape = getattr(student, name).shape
            student.register_buffer(
                name, expand(sp, pa.layout, maps).fraction.to(dtype).reshape(shape)
            )
    try:
        with recording() as folds:
            fold_tie_scales(student)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(
            f"the plan widens a tied weight whose compensation fxgrow "
            f"cannot fold into a parameter ({e}); leave that group "
            f"alone, or grow the model in memory with untie=True"
        ) from e
    out: dict[str, list] = {}
    for target, scale, shift in folds:
        out.setdefault(state.canonical.get(target, target), []).append((scale, shift))
    return {k: tuple(v) for k, v in out.items()}


def check_checkpoint(
    teacher: Mapping[str, tuple[int, ...]],
    shapes: Mapping[str, tuple[int, ...]],
    canonical: Mapping[str, str],
    params: set[str],
) -> None:
    """Every checkpoint tensor has the model's shape (``shapes``) and every parameter of the
    model (canonical names) is in the checkpoint."""
    for name, shape in teacher.items():
        if name in shapes and shapes[name] != tuple(shape):
            raise CheckpointError(
                f"tensor {name!r} has shape {list(shape)} in the checkpoint "
                f"but {list(shapes[name])} in the model its config builds; "
                f"the checkpoint does not belong to this config"
            )
    present = {canonical.get(n, n) for n in teacher}
    missing = sorted(params - present)
    if missing:
        raise CheckpointError(
            f"the checkpoint lacks {len(missing)} parameters of the model, "
            f"first {missing[0]!r}; a shard is missing or belongs to "
            f"another model"
        )


def make_stream_plan(
    analysis: Analysis,
    teacher: Mapping[str, tuple[int, ...]],
    *,
    widen: WidenPlan | None = None,
    blocks: int | None = None,
    stage: str | None = None,
    placement: str = "interleave",
    dtype: torch.dtype = torch.float32,
) -> StreamPlan:
    """The per-tensor plan for ``widen`` and/or growing ``stage`` (default: the longest) to
    ``blocks`` blocks.  ``teacher`` maps the checkpoint's tensor names to their shapes; each
    must agree with the analysed model, and every parameter must be in it.  ``dtype``: the
    checkpoint's, for the compensation of widened tied weights (``tie_folds``)."""
    state = analysis.state
    recipes: dict[str, TensorRecipe] = {}
    folds: dict[str, tuple[tuple[torch.Tensor, float], ...]] = {}
    if widen is not None:
        if widen.placements:
            raise UnsupportedModelError(
                "the plan places fresh units through a channel shuffle chain "
                "(init='zero'); streaming does not carry placements: grow the model in "
                "memory with fxgrow.widen"
            )
        maps = root_maps(analysis, widen)
        sp = state.spaces
        if any(any(r in maps for r in sp.roots(pa.layout)) for pa, _ in state.tied_contractions):
            folds = tie_folds(analysis, widen, dtype)
        for rec in state.scales:
            if any(r in maps for r in sp.roots(rec.layout)):
                raise UnsupportedModelError(
                    f"the plan widens the axis that node {rec.user!r} contracts between two "
                    f"activations; its exact student multiplies one of them by the shares of "
                    f"the copies, a graph change that a checkpoint cannot carry.  Leave that "
                    f"group alone, or grow the model in memory with fxgrow.widen"
                )
        recipes = tensor_recipes(analysis, widen)
    check_checkpoint(
        teacher,
        {name: tuple(t.shape) for name, t in state.tensors.items()},
        state.canonical,
        {
            state.canonical[n]
            for n, t in state.tensors.items()
            if n in state.canonical and t.__class__.__name__ == "Parameter"
        },
    )

    def source(name: str, new_name: str, zero: bool = False) -> TensorSource:
        canonical = state.canonical.get(name, name)
        recipe = recipes.get(canonical)
        shape = recipe.new_shape if recipe else tuple(teacher[name])
        return TensorSource(new_name, name, shape, recipe, zero, folds.get(canonical, ()))

    if blocks is None:
        return StreamPlan(tuple(source(n, n) for n in teacher), widen)
    st = _stage(analysis, stage)
    layout = depth_layout(len(st.blocks), blocks, placement)
    zero = {b: set(residual_stream(analysis.gm, st.blocks[b])) for b in {t for t, z in layout if z}}
    return renumbered(
        teacher, source, st, [b.path for b in st.blocks], layout, zero, state.canonical, widen
    )


def renumbered(
    teacher: Mapping[str, tuple[int, ...]],
    source,
    stage: Stage,
    paths: list[str],
    layout: list[tuple[int, bool]],
    zero: Mapping[int, set[str]],
    canonical: Mapping[str, str],
    widen: WidenPlan | None = None,
) -> StreamPlan:
    """The plan that renumbers the blocks ``paths`` of ``stage`` by ``layout``: student block
    j reads teacher block ``layout[j][0]``, with the tensors ``zero[b]`` (canonical names)
    zeroed in a zero copy of block b.  ``source(name, new_name, zero)`` makes each entry."""
    leaves = [p.rpartition(".")[2] for p in paths]
    if not all(leaf.isdigit() for leaf in leaves) or [int(v) for v in leaves] != list(
        range(int(leaves[0]), int(leaves[0]) + len(leaves))
    ):
        raise UnsupportedModelError(
            f"stage {stage.name!r} has blocks {', '.join(paths[:4])}...; "
            f"streamed depth growth renumbers blocks numbered 0, 1, ..."
        )
    prefix, first = stage.parent + "." if stage.parent else "", int(leaves[0])
    block_of = re.compile(rf"^{re.escape(prefix)}(\d+)\.(.*)$")
    outside: list[TensorSource] = []
    inside: dict[int, list[tuple[str, str]]] = {b: [] for b in range(len(paths))}
    for name in teacher:
        m = block_of.match(name)
        if m and first <= int(m.group(1)) < first + len(paths):
            inside[int(m.group(1)) - first].append((name, m.group(2)))
        else:
            outside.append(source(name, name))
    out = list(outside)
    for j, (b, is_copy) in enumerate(layout):
        for name, rest in inside[b]:
            out.append(
                source(
                    name,
                    f"{prefix}{first + j}.{rest}",
                    is_copy and canonical.get(name, name) in zero[b],
                )
            )
    return StreamPlan(
        tuple(out),
        widen,
        stage.name,
        tuple(b for b, _ in layout),
        tuple(j for j, (_, z) in enumerate(layout) if z),
    )
