"""What the registry says about an op beyond its channel rule -- the traits that replaced the
op tables of other passes, the module class a functional call becomes (``as_module``) -- and
the argument reader built on ``torch.fx.Node.normalized_arguments``."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from helpers import widen_exact

import fxgrow
from fxgrow.analysis.arguments import MissingArgument, argument, with_argument
from fxgrow.analysis.rules import reduce
from fxgrow.analysis.rules.elementwise import unary
from fxgrow.analysis.rules.registry import RegistrationError, has_trait, module_for, rule
from fxgrow.frontend.modal import make_modal
from fxgrow.rewrite.activation import _as_module, _FunctionActivation

aten = torch.ops.aten


@pytest.mark.parametrize(
    "target,trait,expected",
    [
        (F.softmax, "softmax", True),
        (aten._softmax.default, "softmax", True),
        (nn.Softmax, "softmax", True),
        (F.log_softmax, "softmax", False),
        (operator.truediv, "keeps_positions", True),
        ("masked_fill_", "keeps_positions", True),
        (aten.native_dropout.default, "keeps_positions", True),
        (nn.Identity, "keeps_positions", True),
        (operator.pow, "keeps_positions", False),
        (torch.exp, "keeps_positions", False),
        (torch.einsum, "matmul", True),
        ("matmul", "matmul", True),
        (aten.bmm.default, "matmul", True),
        (F.linear, "affine", True),
        (aten.conv2d.default, "affine", True),
        (torch.matmul, "affine", False),
        (torch.addmm, "bias_plus_product", True),
        (torch.swapaxes, "swap_axes", True),
        ("swapdims", "swap_axes", True),
        (nn.Dropout2d, "commutes_with_scale", True),
        (nn.AlphaDropout, "commutes_with_scale", False),
        (aten.embedding.default, "table_lookup", True),
        (F.embedding, "table_lookup", True),
        (aten.layer_norm.default, "scaled_norm", True),
        (F.rms_norm, "scaled_norm", False),
        (aten.dropout.default, "dropout", True),
        (torch.dropout, "dropout", True),
        (aten.native_dropout.default, "dropout", False),
        ("size", "reads_metadata", True),
        ("numel", "reads_metadata", True),
        ("get_device", "reads_metadata", True),
        ("sum", "reads_metadata", False),
        (torch.numel, "reads_metadata", False),
    ],
)
def test_trait_of_op(target, trait, expected):
    assert has_trait(target, trait) is expected


@pytest.mark.parametrize(
    "target,cls",
    [
        (F.gelu, nn.GELU),
        ("relu", nn.ReLU),
        (torch.sigmoid, nn.Sigmoid),
        (F.dropout2d, nn.Dropout2d),
        (aten.feature_dropout.default, nn.Dropout2d),
        (aten.alpha_dropout.default, nn.AlphaDropout),
        (torch.dropout, nn.Dropout),
        (F.softmax, None),
        (F.leaky_relu, None),
        ("no_such_method", None),
    ],
)
def test_module_for(target, cls):
    assert module_for(target) is cls


def test_as_module_is_checked_at_registration():
    with pytest.raises(RegistrationError, match="already computed by GELU, not SiLU"):
        rule(F.gelu, as_module=nn.SiLU)(unary)
    with pytest.raises(RegistrationError, match="torch.nn.Module class"):
        rule(F.gelu, as_module=F.gelu)(unary)
    assert module_for(F.gelu) is nn.GELU


def test_functional_activation_becomes_its_module_with_its_keywords():
    gelu = _as_module(_FunctionActivation(F.gelu, (), {"approximate": "tanh"}, False))
    assert type(gelu) is nn.GELU and gelu.approximate == "tanh"
    relu = _as_module(_FunctionActivation(F.relu, (), {"inplace": True}, False))
    assert type(relu) is nn.ReLU and not relu.inplace
    assert type(_as_module(_FunctionActivation("tanh", (), {}, True))) is nn.Tanh
    leaky = _FunctionActivation(F.leaky_relu, (0.2,), {}, False)  # no module named: kept
    assert _as_module(leaky) is leaky


class _Calls(nn.Module):
    def forward(self, x):
        return (
            torch.norm(x, 2, 1),
            torch.topk(x, 2, dim=0),
            x.sum(1),
            F.dropout(x, 0.25),
            torch.ops.aten.dropout.default(x, 0.5, False),
        )


def _nodes() -> dict[str, torch.fx.Node]:
    return {n.name: n for n in torch.fx.symbolic_trace(_Calls()).graph.nodes}


def test_argument_by_name_wherever_it_was_written():
    nodes = _nodes()
    assert argument(nodes["norm"], 1, "dim") == 1  # at position 2, after p
    assert argument(nodes["topk"], 2, "dim") == 0  # a keyword
    assert argument(nodes["dropout"], 2, "training") is True  # the signature's default
    assert argument(nodes["dropout"], 3, "inplace") is False
    assert argument(nodes["dropout_default"], 2, "train") is False  # an ATen schema


def test_argument_falls_back_to_position_then_default():
    nodes = _nodes()
    assert argument(nodes["sum_1"], 1, "dim") == 1  # a method: torch.fx cannot bind it
    assert argument(nodes["sum_1"], 2, "keepdim", "absent") == "absent"
    with pytest.raises(MissingArgument, match="sum_1 has no argument keepdim"):
        argument(nodes["sum_1"], 2, "keepdim")


def test_with_argument_replaces_where_the_call_passes_it():
    assert with_argument((1, 2, 3), {}, 1, "dim", 9) == ((1, 9, 3), {})
    assert with_argument((1,), {"dim": 2}, 1, "dim", 9) == ((1,), {"dim": 9})
    assert with_argument((1,), {"split_size": 2}, 1, ("sections", "split_size"), 9) == (
        (1,),
        {"split_size": 9},
    )
    assert with_argument((1,), {}, 1, ("sections", "split_size"), 9) == ((1,), {"sections": 9})


def test_torch_dropout_follows_train_and_eval():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.dropout(self.fc(x), 0.5, True)

    gm = make_modal(torch.fx.symbolic_trace(M()), training=False)
    assert [type(m) for m in gm.modules() if isinstance(m, nn.Dropout)] == [nn.Dropout]
    x = torch.randn(3, 4)
    assert torch.equal(gm(x), gm.fc(x))  # eval: the identity
    gm.train()
    assert (gm(x) == 0).any()


def test_reduce_rules_do_not_ask_for_their_op():
    """Each reduce behaviour is its own registration: no rule reads the op's name."""
    import inspect

    source = inspect.getsource(reduce)
    assert "op_name" not in source and "cx.node.target ==" not in source
    assert "cx.node.target in" not in source


class _Stats(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        if self.how == "population":
            s = torch.var(h, dim=1, keepdim=True, correction=0)
        elif self.how == "sample":
            s = torch.var(h, dim=1, keepdim=True)
        elif self.how == "norm":
            s = torch.norm(h, 2, 1, keepdim=True)  # dim at position 2, after p
        else:
            s = torch.topk(h, 2, dim=1).values.sum(1, keepdim=True)
        return self.b(h * s)


def _group_of_a(model, x) -> fxgrow.ChannelGroup:
    (g,) = [
        g
        for g in fxgrow.groups(model, x)
        if any(m.module == "a" and m.role == "produce" for m in g.members)
    ]
    return g


def test_population_variance_stays_exact_under_uniform_growth():
    m, x = _Stats("population").double(), torch.randn(5, 3, dtype=torch.float64)
    assert _group_of_a(m, x).widenable
    s = widen_exact(m, x, tol=1e-10, factor=2)
    assert s.a.out_features == 8


@pytest.mark.parametrize(
    "how,reason",
    [
        ("sample", "reduced over by var"),
        ("norm", "reduced over by norm"),
        ("topk", "positions reordered by topk"),
    ],
)
def test_reductions_over_channels_block_with_their_name(how, reason):
    m, x = _Stats(how).double(), torch.randn(5, 3, dtype=torch.float64)
    g = _group_of_a(m, x)
    assert not g.widenable
    assert reason in [b.reason for b in g.blockers]


def test_pool_subclass_without_its_own_forward_uses_the_pool_rule():
    """Each pooling rule knows its number of spatial axes: a subclass that keeps the pool's
    forward finds the rule through its base class and needs no table entry of its own."""

    class MyPool(nn.MaxPool2d):
        pass

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.pool, self.b = nn.Conv2d(3, 4, 1), MyPool(2), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.b(torch.constant_pad_nd(self.pool(self.a(x)), (1, 1)))

    m, x = M().double(), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    s = widen_exact(m, x, tol=1e-10, factor=2)
    assert s.a.out_channels == 8 and s.b.in_channels == 8


def _call_of(gm: torch.fx.GraphModule, target) -> torch.fx.Node:
    (node,) = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is target]
    return node


def test_narrow_written_with_keywords_is_rewritten_by_name():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 5, 1), nn.Conv2d(8, 5, 1)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.narrow(h, 1, start=2, length=4)) + self.c(h)

    m, x = M().double(), torch.randn(2, 3, 3, 3, dtype=torch.float64)
    s = widen_exact(m, x, tol=1e-10, factor=2)
    assert s.a.out_channels == 16 and s.b.in_channels == 8
    node = _call_of(s, torch.narrow)
    assert node.args[2:] == () and dict(node.kwargs) == {"start": 4, "length": 8}


def test_group_norm_with_a_group_per_channel_follows_the_width():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.b(F.group_norm(self.a(x), num_groups=4))

    m, x = M().double(), torch.randn(2, 3, 5, 5, dtype=torch.float64)
    s = widen_exact(m, x, tol=1e-10, factor=2)
    assert s.a.out_channels == 8 and s.b.in_channels == 8
    assert argument(_call_of(s, F.group_norm), 1, "num_groups") == 8


def test_in_place_functional_call_is_kept_however_inplace_is_written():
    from fxgrow.rewrite.dead_code import has_side_effect

    g = torch.fx.Graph()
    x = g.placeholder("x")
    positional = g.call_function(F.relu, (x, True))
    keyword = g.call_function(F.relu, (x,), {"inplace": True})
    pure = g.call_function(F.relu, (x,))
    assert has_side_effect(positional) and has_side_effect(keyword)
    assert not has_side_effect(pure)


def test_numel_reads_every_axis_and_dim_none():
    """``numel`` is a size of every axis (it changes with the width); ``dim`` is metadata."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h) * h.dim() / h.numel()

    m, x = M().double(), torch.randn(5, 3, dtype=torch.float64)
    assert [(b.node, b.reason) for b in _group_of_a(m, x).blockers] == [
        ("truediv", "uses a size read from a channel axis; it would change with the width")
    ]


def test_containers_are_torch_classes_not_names():
    """A block path is a container only for torch's own Sequential/ModuleList/ModuleDict,
    recorded as the class (fx) or its qualified name (export); a class of the same name
    elsewhere, or a subclass, is a block like any other module."""
    from fxgrow.analysis.blocks import _is_container

    class Sequential(nn.Module):  # a user's class that happens to share the name
        pass

    class Stack(nn.Sequential):
        pass

    def node(kind) -> torch.fx.Node:
        n = torch.fx.Graph().placeholder("x")
        n.meta["nn_module_stack"] = {"k": ("layer", kind)}
        return n

    assert _is_container([node(nn.Sequential)], "layer")
    assert _is_container([node("torch.nn.modules.container.ModuleList")], "layer")
    assert not _is_container([node(Sequential)], "layer")
    assert not _is_container([node(f"{__name__}.Sequential")], "layer")
    assert not _is_container([node(Stack)], "layer")
    assert not _is_container([node(nn.Sequential)], "other")


def test_aten_slice_window_is_rewritten_where_it_was_written():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 5, 1), nn.Conv2d(8, 5, 1)

        def forward(self, x):
            h = self.a(x)
            return self.b(h[:, 2:6]) + self.c(h)

    m, x = M().double(), torch.randn(2, 3, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        s = fxgrow.widen(m, x, factor=2, frontend="export", verify=False)
    assert fxgrow.compare(m, s, x).max_rel <= 1e-10
    (node,) = [n for n in s.graph.nodes if n.target is aten.slice.Tensor and n.args[1] == 1]
    assert node.args[2:] == (4, 12) and not node.kwargs
