"""State of one analysis and the small API op rules use to read and constrain it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..errors import RuleError
from .arguments import MISSING, MissingArgument, argument, bound_arguments
from .layout import Blocker, Fixed, Layout, SpaceTable
from .values import SizeInfo, TensorInfo, Value

if TYPE_CHECKING:
    from .contraction import ContractionScale

PRODUCE = "produce"  # writes the space: new unit j copies unit g(j)
SCALE = "scale"  # per-channel parameter/buffer: copies with g
CONSUME = "consume"  # reads the space: column j = column g(j) / c(g(j))

SizeFn = Callable[[Layout], int]
M = TypeVar("M", bound=torch.nn.Module)
AttrRead = tuple[torch.fx.Node, torch.fx.Node]  # (user node, the get_attr node it reads)


class Consumer(NamedTuple):
    """A contraction that divides a parameter axis: what a tied weight compensates instead.

    ``user`` contracts; ``link`` is (the node reading the parameter, its get_attr node) when
    the parameter is read through the graph, None for a call_module's own parameter;
    ``activation`` / ``activation_axis``: the activation it contracts with (None if unknown)."""

    user: torch.fx.Node
    link: AttrRead | None
    activation: torch.fx.Node | None
    activation_axis: int | None


class LayoutBlock(NamedTuple):
    """A constraint on a layout's classes, applied after the walk."""

    layout: Layout
    blocker: Blocker


class BlockedNode(NamedTuple):
    """A node no rule handles, and why."""

    node: str  # the node's name
    reason: str


@dataclass
class ParamAxis:
    """One axis of a parameter or buffer that lies along channel spaces."""

    target: str
    axis: int
    layout: Layout
    roles: set[str] = field(default_factory=set)  # PRODUCE / SCALE / CONSUME
    is_buffer: bool = False
    consumers: list[Consumer] = field(default_factory=list)  # contractions dividing this axis


class TiedContraction(NamedTuple):
    """A tied tensor's axis (copied, never divided) and a contraction that would divide it:
    the rewrite divides the contraction's activation instead (``_finish_params``)."""

    param: ParamAxis
    consumer: Consumer


@dataclass
class AttrRule:
    """A module attribute that follows the new sizes (``in_channels``, ``num_features`` ...)."""

    module: str
    attr: str
    compute: Callable[[SizeFn], Any]
    layouts: tuple[Layout, ...]  # the layouts it depends on (for group membership)


@dataclass
class ArgRule:
    """New (args, kwargs) for a node whose constants encode sizes (view, split, slices ...).

    Invariant: ``compute`` returns the student's constants for *any* widths (the teacher's
    when nothing grows), and ``layouts`` holds every axis whose growth changes the node: the
    result's axes and the axes its run-time size arguments were read from.  A size read from
    one space that sizes an axis of another (``reshape(b, c, h, w)`` with ``c`` from
    ``x.shape`` and the tensor in another space) is therefore replaced by a constant whenever
    either space grows, never left to follow the wrong one."""

    node: str
    compute: Callable[[SizeFn, tuple, dict], tuple]
    layouts: tuple[Layout, ...]


@dataclass
class AnalysisState:
    """Everything one walk of the graph records: example values, the space table, each node's
    value, and the parameter axes, attributes and arguments that follow the channel sizes.
    Growth ties (axes that must grow equally) are the space table's (``spaces.ties``);
    ``tied_contractions`` are about tied *tensors*."""

    gm: torch.fx.GraphModule
    vals: dict[torch.fx.Node, Any]  # example values (meta tensors, ints ...)
    spaces: SpaceTable = field(default_factory=SpaceTable)
    values: dict[torch.fx.Node, Value] = field(default_factory=dict)
    params: dict[tuple[str, int], ParamAxis] = field(default_factory=dict)  # (target, axis)
    attrs: list[AttrRule] = field(default_factory=list)
    args: dict[str, ArgRule] = field(default_factory=dict)  # node name -> its rule
    # statistics over these layouts are exact only under equal replication
    uniform: list[LayoutBlock] = field(default_factory=list)
    consumed: set[AttrRead] = field(default_factory=set)  # parameter reads that contract
    blocked_nodes: list[BlockedNode] = field(default_factory=list)  # unknown ops
    outputs: list[TensorInfo] = field(default_factory=list)  # each output tensor, in order
    tied_contractions: list[TiedContraction] = field(default_factory=list)
    grow_outputs: bool = False  # outputs may widen (compared on the teacher's positions)
    scales: list[ContractionScale] = field(default_factory=list)  # see analysis/contraction.py
    # op blockers applied after the walk only to classes nothing fixes as structure
    unless_structure: list[LayoutBlock] = field(default_factory=list)
    fixed_outputs: int = 0  # with grow_outputs, how many leading outputs keep their shape

    def vals_by_name(self, gm: torch.fx.GraphModule) -> dict[torch.fx.Node, Any]:
        """Example values keyed by the nodes of ``gm`` (a copy of this graph)."""
        by_name = {n.name: v for n, v in self.vals.items()}
        return {n: by_name[n.name] for n in gm.graph.nodes if n.name in by_name}

    def __post_init__(self) -> None:
        # One walk of the module tree gives what named_modules() (first path of each module),
        # named_parameters / named_buffers (remove_duplicate=False) give, in their order.
        self.modules: dict[str, torch.nn.Module] = {}
        params: dict[str, torch.Tensor] = {}
        buffers: dict[str, torch.Tensor] = {}
        visited: set[int] = set()
        for prefix, module in self.gm.named_modules(remove_duplicate=False):
            if id(module) not in visited:
                visited.add(id(module))
                self.modules[prefix] = module
            dot = prefix + "." if prefix else ""
            for k, v in module._parameters.items():
                if v is not None:
                    params[dot + k] = v
            for k, v in module._buffers.items():
                if v is not None:
                    buffers[dot + k] = v
        self.tensors = {**params, **buffers}
        self.buffer_names = set(buffers)
        # tied parameters: every alias maps to the first name
        seen: dict[int, str] = {}
        self.canonical: dict[str, str] = {}
        for name, t in self.tensors.items():
            self.canonical[name] = seen.setdefault(id(t), name)


class RuleContext:
    """What a rule sees: the node, its example values, and constraint helpers."""

    def __init__(self, state: AnalysisState, node: torch.fx.Node) -> None:
        self.state = state
        self.node = node
        self.spaces = state.spaces
        self.handled_sizes: set[int] = set()
        self.handled_layouts: list[Layout] = []  # the axes the handled sizes were read from
        # a call_module node's target is its module's path (a str)
        self.module = (
            state.modules.get(cast(str, node.target)) if node.op == "call_module" else None
        )
        self._bound: Any = MISSING  # the node's arguments by name, bound once on first use

    # -- reading -------------------------------------------------------------------------------
    def arg(self, i: int | None, name: str | None = None, default: Any = RuleError) -> Any:
        """The raw argument ``name`` as the target's signature binds it (``arguments``), else
        the one at position ``i`` or keyword ``name`` as written."""
        if name is not None and self._bound is MISSING:
            self._bound = bound_arguments(self.node, self.state.gm)
        try:
            return argument(
                self.node,
                i,
                name,
                MISSING if default is RuleError else default,
                bound=None if self._bound is MISSING else self._bound,
            )
        except MissingArgument:
            raise RuleError(f"missing argument {name or i}") from None

    def value(self, a: Any) -> Any:
        """The analysis value of an argument (nodes looked up, containers mapped)."""
        if isinstance(a, torch.fx.Node):  # a pytree leaf: the common case, without pytree
            return self.state.values[a]
        return pytree.tree_map(
            lambda x: self.state.values[x] if isinstance(x, torch.fx.Node) else x, a
        )

    def tensor(self, a: Any) -> TensorInfo:
        """The TensorInfo of a tensor argument; a RuleError if the argument is not a tensor."""
        v = self.value(a)
        if not isinstance(v, TensorInfo):
            raise RuleError(f"expected a tensor argument, got {type(v).__name__}")
        return v

    def example(self, a: Any = None) -> Any:
        """The example value (meta tensor, int ...) of a node; of this node by default."""
        a = self.node if a is None else a
        return self.state.vals.get(a) if isinstance(a, torch.fx.Node) else a

    def out_shape(self) -> tuple[int, ...]:
        """The shape of this node's example result; a RuleError if the result is not a tensor."""
        v = self.example()
        if not isinstance(v, torch.Tensor):
            raise RuleError("expected a tensor result")
        return tuple(int(n) for n in v.shape)

    def concrete(self, a: Any) -> Any:
        """An argument's concrete value (example values for nodes), containers mapped."""
        if isinstance(a, torch.fx.Node):
            return self.state.vals.get(a)
        return pytree.tree_map(
            lambda x: self.state.vals.get(x) if isinstance(x, torch.fx.Node) else x, a
        )

    # -- building values -----------------------------------------------------------------------
    def blocker(self, reason: str, kind: str = "op") -> Blocker:
        """A Blocker naming this node, with ``reason``."""
        return Blocker(self.node.name, reason, kind)

    def fixed(self, n: int, reason: str) -> Layout:
        """``n`` positions that are not a channel space (spatial, batch, a new size-1 axis)."""
        return (Fixed(int(n), self.blocker(reason, "structure")),)

    def out(self, layouts) -> TensorInfo:
        """This node's tensor value with the given per-axis layouts."""
        shape = self.out_shape()
        layouts = tuple(layouts)
        if len(layouts) != len(shape):
            raise RuleError(f"rule produced {len(layouts)} axes for a {len(shape)}-d result")
        for lay, n in zip(layouts, shape):
            if self.spaces.size(lay) != n:
                raise RuleError(
                    f"rule produced an axis of size {self.spaces.size(lay)}, the result has {n}"
                )
        return TensorInfo(shape, layouts)

    def info_for(self, t: Any, reason: str) -> Any:
        """Fresh all-fixed values for an example value (tensor or container)."""

        def conv(v):
            if isinstance(v, torch.Tensor):
                return TensorInfo(tuple(v.shape), tuple(self.fixed(n, reason) for n in v.shape))
            return v

        return pytree.tree_map(conv, t)

    # -- constraints ---------------------------------------------------------------------------
    def unify(self, a: Layout, b: Layout, reason: str = "incompatible channel structure") -> None:
        """Make ``a`` and ``b`` share channel spaces; where they cannot, block both, naming
        this node."""
        self.spaces.unify(a, b, self.blocker(reason))

    def block(self, layout: Layout, reason: str, kind: str = "op") -> None:
        """Keep every channel space in ``layout`` at its width, naming this node with ``reason``."""
        self.spaces.block(layout, self.blocker(reason, kind))

    def block_unless_structure(self, layout: Layout, reason: str) -> None:
        """Block ``layout``'s classes as an op, unless (once the whole graph is read) a class
        is fixed as structure anyway -- a normalisation over a head dim that attention fixes
        changes nothing, and is no reason to report the group."""
        self.state.unless_structure.append(LayoutBlock(layout, self.blocker(reason)))

    def param(self, target: str, axis: int, role: str | None) -> Layout:
        """The layout of ``target``'s axis (created on first use) and record how it is used."""
        target = self.state.canonical.get(target, target)
        key = (target, axis)
        pa = self.state.params.get(key)
        if pa is None:
            size = self.state.tensors[target].shape[axis]
            pa = ParamAxis(
                target,
                axis,
                self.spaces.new(int(size)),
                is_buffer=target in self.state.buffer_names,
            )
            self.state.params[key] = pa
        if role is not None:
            pa.roles.add(role)
        return pa.layout

    def module_as(self, cls: type[M]) -> M:
        """This call_module's module as ``cls``: the class (or a base of the class) the rule
        was registered for, so the registry's lookup guarantees it."""
        if not isinstance(self.module, cls):
            raise RuleError(f"expected a {cls.__name__} module, got {type(self.module).__name__}")
        return self.module

    def module_param(self, name: str, axis: int, role: str | None) -> Layout | None:
        """``param`` for a parameter of this call_module's module (None if absent)."""
        if getattr(self.module, name, None) is None:
            return None
        return self.param(f"{self.node.target}.{name}", axis, role)

    def module_param_required(self, name: str, axis: int, role: str | None) -> Layout:
        """``module_param`` for a parameter the module's class always has."""
        lay = self.module_param(name, axis, role)
        if lay is None:
            raise RuleError(f"module {self.node.target} has no parameter {name!r}")
        return lay

    def consume(
        self, a: Any, axis: int, contracted: Layout, activation: tuple[Any, int] | None = None
    ) -> None:
        """Operand ``a`` is contracted along ``axis`` (layout ``contracted``) with
        ``activation`` = (node, axis): if ``a`` is a parameter read directly (through
        transposes), its slices are divided on rewrite; otherwise a contraction of two
        activations over a channel space is not exact."""
        src = self._param_source(a, axis)
        if src is None:
            from .contraction import scale_operand

            if not scale_operand(self, [(a, axis)], contracted):
                self.block(
                    contracted,
                    "contraction between two activations over this axis "
                    "is not preserved by replication",
                )
            return
        target, paxis, chain = src
        self.param(target, paxis, CONSUME)
        self.state.consumed.update(chain)
        act, act_axis = activation or (None, None)
        self.state.params[(target, paxis)].consumers.append(
            Consumer(self.node, chain[-1], act, act_axis)
        )

    def produce(self, a: Any, axis: int) -> None:
        """A directly read parameter's axis writes a new space (for naming and roles)."""
        src = self._param_source(a, axis)
        if src is not None:
            self.param(src[0], src[1], PRODUCE)

    def module_consume(self, name: str, axis: int, activation: tuple[Any, int]) -> Layout:
        """``module_param(name, axis, CONSUME)``, remembering the activation it contracts."""
        lay = self.module_param_required(name, axis, CONSUME)
        key = (
            self.state.canonical.get(f"{self.node.target}.{name}", f"{self.node.target}.{name}"),
            axis,
        )
        self.state.params[key].consumers.append(Consumer(self.node, None, *activation))
        return lay

    def _param_source(self, a: Any, axis: int) -> tuple[str, int, list[AttrRead]] | None:
        """(canonical target, axis, the reads from this node to the get_attr) when ``a``
        is a parameter read directly, through transposes only; else None."""
        from .rules.registry import has_trait  # the rules import this module

        chain: list[AttrRead] = []
        user = self.node
        while isinstance(a, torch.fx.Node):
            if a.op == "get_attr":
                chain.append((user, a))
                t = cast(str, a.target)  # a get_attr node's target is the attribute's path
                t = self.state.canonical.get(t, t)
                return (t, axis, chain) if t in self.state.tensors else None
            if len(a.users) != 1 or a.op not in ("call_method", "call_function"):
                return None
            if has_trait(a.target, "matrix_transpose"):
                axis = 1 - axis
            elif has_trait(a.target, "swap_axes"):
                d0, d1 = argument(a, 1, "dim0", None), argument(a, 2, "dim1", None)
                if not (isinstance(d0, int) and isinstance(d1, int)):
                    return None  # swapaxes(axis0=, axis1=): not followed
                nd = self.example(a).dim()
                d0, d1 = d0 % nd, d1 % nd
                axis = d1 if axis == d0 else d0 if axis == d1 else axis
            elif has_trait(a.target, "permute_axes"):
                dims = a.args[1:] if not isinstance(a.args[1], (tuple, list)) else a.args[1]
                axis = dims[axis] % self.example(a).dim()
            else:
                return None
            chain.append((user, a))
            user, a = a, a.args[0]
        return None

    def set_attr(
        self,
        attr: str,
        compute: Callable[[SizeFn], Any],
        *layouts: Layout,
        module: str | None = None,
    ) -> None:
        """Module attribute ``attr`` of this call_module (or ``module``) follows new sizes."""
        # without ``module``, a call_module node: its target is the module's path
        path = module or cast(str, self.node.target)
        self.state.attrs.append(AttrRule(path, attr, compute, layouts))

    def size_attr(self, attr: str, layout: Layout, module: str | None = None) -> None:
        """Module attribute ``attr`` of this call_module (or ``module``) holds the student's
        size of ``layout``."""
        self.set_attr(attr, lambda size: size(layout), layout, module=module)

    def rewrite_args(self, compute: Callable[[SizeFn, tuple, dict], tuple], *layouts) -> None:
        """The student recomputes this node's arguments as ``compute(size, args, kwargs)``."""
        self.state.args[self.node.name] = ArgRule(self.node.name, compute, layouts)

    def uniform(self, layout: Layout, reason: str) -> None:
        """Statistics over ``layout`` are exact only if every position is replicated equally."""
        if self.spaces.roots(layout):
            self.state.uniform.append(LayoutBlock(layout, self.blocker(reason)))

    def sizes_handled(self, *values: Any) -> None:
        """The rule rewrites these size arguments itself (they may come from channel axes)."""
        for v in pytree.tree_leaves(values):
            if isinstance(v, SizeInfo) and id(v) not in self.handled_sizes:
                self.handled_sizes.add(id(v))
                self.handled_layouts.extend(v.layouts)
