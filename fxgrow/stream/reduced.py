"""Depth (and width inside the blocks) planned on a model of two blocks.

Growing depth only renames tensors and zeroes, in each inserted copy, the last layer of every
residual branch: the plan needs the stage's block paths and, per block, which tensors those
are.  The capture (torch.export) costs time in proportion to the blocks, so when the blocks
are all alike the model is captured with two of them and the answer for block 1 is used for
every block.  "Alike" is checked, not assumed:

* the config has no per-layer setting that differs between layers (``layer_types`` ...);
* in the full model every block has the modules (types) and tensors (shapes) of block 1, and
  the tensors outside the stage are those of the two-block model;
* in the two-block graph, block 1 is block 0 node for node (same ops, same arguments, its own
  parameters), reading the same shared inputs (rotary tables, masks), and the tensors to zero
  are block 0's renamed.

Widening groups that each lie inside one block is planned on the same capture
(``reduced_width``).  Otherwise (or when anything fails) ``reduced_plan`` returns None and the
caller analyses the full model.  Invariant: when it answers, the plan is the one the full model's
analysis gives (``make_stream_plan``), tensor for tensor."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from ..analysis import Analysis
from ..analysis.blocks import Block, Stage
from ..errors import FxgrowError
from ..planning.plan import WidenPlan
from ..rewrite.block_copy import residual_stream
from ..rewrite.recipe import TensorRecipe
from .plan import (
    StreamPlan,
    TensorSource,
    _stage,
    check_checkpoint,
    depth_layout,
    renumbered,
)


def _rename(name: str, old: str, new: str) -> str:
    return new + name[len(old) :] if name == old or name.startswith(old + ".") else name


def _tensors(model: torch.nn.Module) -> dict[str, tuple[type, tuple[int, ...]]]:
    """Every parameter and buffer (shared ones under each name): kind and shape."""
    out = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        dot = prefix + "." if prefix else ""
        for store in (module._parameters, module._buffers):
            for k, v in store.items():
                if v is not None:
                    out[dot + k] = (type(v), tuple(v.shape))
    return out


def _types(module: torch.nn.Module) -> list[tuple[str, type]]:
    return [(n, type(m)) for n, m in module.named_modules()]


def _same_block(gm: torch.fx.GraphModule, a: Block, b: Block) -> bool:
    """Block ``b`` is block ``a`` node for node, with its own parameters."""
    nodes = {n.name: n for n in gm.graph.nodes}
    na, nb = [nodes[x] for x in a.nodes], [nodes[x] for x in b.nodes]
    if len(na) != len(nb) or not a.residual or not b.residual:
        return False

    def keys(block: Block, own: list[torch.fx.Node]):
        pos = {n: i for i, n in enumerate(own)}
        start = nodes[block.input]

        def key(x: Any) -> Any:
            if not isinstance(x, torch.fx.Node):
                return x
            if x in pos:
                return ("inside", pos[x])
            if x is start:
                return ("input",)
            if x.op == "get_attr":
                return ("attr", _rename(str(x.target), block.path, "@"))
            return ("shared", x.name)

        return key

    ka, kb = keys(a, na), keys(b, nb)
    for x, y in zip(na, nb, strict=True):
        tx = _rename(x.target, a.path, "@") if isinstance(x.target, str) else x.target
        ty = _rename(y.target, b.path, "@") if isinstance(y.target, str) else y.target
        if x.op != y.op or tx != ty:
            return False
        if torch.fx.node.map_aggregate((x.args, x.kwargs), ka) != torch.fx.node.map_aggregate(
            (y.args, y.kwargs), kb
        ):
            return False
    return True


@dataclass(frozen=True)
class TwoBlocks:
    """A two-block model shown to stand for the full one (see the module's docstring):
    ``analysis`` of the two-block model, its ``stage``, the full model's block count ``n``,
    ``canonical`` names of the full model's tensors, and ``zero``: block 1's tensors that a
    zero copy zeroes."""

    analysis: Analysis
    stage: Stage
    n: int
    canonical: dict[str, str]
    zero: tuple[str, ...]

    def block(self, k: int) -> str:
        """The path of block ``k`` of the stage."""
        return f"{self.stage.parent}.{k}"

    def to_block(self, name: str, k: int) -> str:
        """Block 1's ``name`` in block ``k``."""
        return _rename(name, self.block(1), self.block(k))


def two_blocks(
    config: Any,
    model: torch.nn.Module,
    teacher: Mapping[str, tuple[int, ...]],
    inputs: tuple,
    stage: str | None = None,
) -> TwoBlocks | None:
    """The analysis of ``config``'s model with two blocks, when it is shown to stand for the
    full ``model`` (on the meta device), whose tensors are checked against ``teacher``'s
    shapes; else None."""
    import fxgrow

    from .hf import meta_model

    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 3:
        return None
    small = copy.deepcopy(config)
    small.num_hidden_layers = 2
    for key, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == n and key != "architectures":
            if any(v != value[0] for v in value):
                return None  # per-layer settings differ: the blocks may too
            setattr(small, key, value[:2])
    try:
        two = meta_model(small)
        analysis = fxgrow.analyze(two, tuple(x.to("meta") for x in inputs))
        st = _stage(analysis, stage)
        paths = [b.path for b in st.blocks]
        if len(paths) != 2 or paths[1] != f"{st.parent}.1" or paths[0] != f"{st.parent}.0":
            return None
        full_stage = model.get_submodule(st.parent)
        if not isinstance(full_stage, torch.nn.ModuleList) or len(full_stage) != n:
            return None
        zero0, zero1 = (residual_stream(analysis.gm, b) for b in st.blocks)
    except FxgrowError:  # the full analysis gives the real error
        return None
    if [_rename(z, paths[0], paths[1]) for z in zero0] != zero1:
        return None
    try:
        if not _same_block(analysis.gm, *st.blocks):
            return None
    except (RuntimeError, TypeError):  # an argument that does not compare (a tensor)
        return None
    # the full model: the two-block model's tensors outside the stage, block 1's in every block
    small_tensors, full_tensors = _tensors(two), _tensors(model)
    block1 = two.get_submodule(paths[1])
    want = {k: v for k, v in small_tensors.items() if not k.startswith(st.parent + ".")}
    for k in range(n):
        if _types(full_stage[k]) != _types(block1):
            return None
        want.update(
            {
                _rename(name, paths[1], f"{st.parent}.{k}"): v
                for name, v in small_tensors.items()
                if name.startswith(paths[1] + ".")
            }
        )
    if want != full_tensors:
        return None
    # the analysis' view (the captured graph's tensors), block 1's repeated
    state = analysis.state
    inside = [x for x in state.tensors if x.startswith(st.parent + ".")]
    if any(state.canonical.get(x, x) != x for x in inside):
        return None  # a tie inside the blocks
    shapes, canonical, params = {}, {}, set()
    for name, t in state.tensors.items():
        names = (
            [_rename(name, paths[1], f"{st.parent}.{k}") for k in range(n)]
            if name.startswith(paths[1] + ".")
            else []
            if name.startswith(paths[0] + ".")
            else [name]
        )
        for x in names:
            shapes[x] = tuple(t.shape)
            canonical[x] = state.canonical.get(name, name) if x == name else x
            if name in state.canonical and t.__class__.__name__ == "Parameter":
                params.add(canonical[x])
    check_checkpoint(teacher, shapes, canonical, params)
    return TwoBlocks(analysis, st, n, canonical, tuple(zero1))


def reduced_plan(
    config: Any,
    model: torch.nn.Module,
    teacher: Mapping[str, tuple[int, ...]],
    inputs: tuple,
    *,
    blocks: int | None = None,
    stage: str | None = None,
    placement: str = "interleave",
    widths: Mapping[str, int] | None = None,
    seed: int = 0,
) -> StreamPlan | None:
    """The plan for ``blocks`` and/or ``widths`` (balanced equal-split maps, as
    ``plan_checkpoint`` makes them) from a two-block capture of ``config``'s model
    (``model``: the full one, on the meta device), or None where the blocks are not shown to
    be alike or the widths are not each inside one block (``reduced_width``)."""
    tb = two_blocks(config, model, teacher, inputs, stage)
    if tb is None or (blocks is None and widths is None):
        return None
    widen: WidenPlan | None = None
    recipes: dict[str, TensorRecipe] = {}
    if widths is not None:
        from .reduced_width import block_widths

        got = block_widths(tb, widths, seed)
        if got is None:
            return None
        widen, recipes = got

    def source(name: str, new_name: str, zero: bool = False) -> TensorSource:
        recipe = recipes.get(tb.canonical.get(name, name))
        shape = recipe.new_shape if recipe else tuple(teacher[name])
        return TensorSource(new_name, name, shape, recipe, zero)

    if blocks is None:
        return StreamPlan(tuple(source(x, x) for x in teacher), widen)
    layout = depth_layout(tb.n, blocks, placement)
    zero = {b: {tb.to_block(z, b) for z in tb.zero} for b in {t for t, z in layout if z}}
    full_paths = [tb.block(k) for k in range(tb.n)]
    return renumbered(teacher, source, tb.stage, full_paths, layout, zero, tb.canonical, widen)


def reduced_depth_plan(
    config: Any,
    model: torch.nn.Module,
    teacher: Mapping[str, tuple[int, ...]],
    inputs: tuple,
    *,
    blocks: int,
    stage: str | None = None,
    placement: str = "interleave",
) -> StreamPlan | None:
    """``reduced_plan`` for depth alone."""
    return reduced_plan(
        config, model, teacher, inputs, blocks=blocks, stage=stage, placement=placement
    )
