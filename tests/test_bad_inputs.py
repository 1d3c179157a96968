"""Bad inputs: every one raises a ``fxgrow.FxgrowError`` subclass whose message says what was
wrong and what to do.  Where fxgrow does something (rather than refuse) with an input that
looks risky -- a model in train mode, a module called twice, tied weights -- the test
documents what is and is not preserved."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from fuzz.profiles import one_thread  # noqa: F401
from helpers import TiedLM, teacher_unchanged

import fxgrow
from fxgrow import (
    BlockedGroupError,
    DeepenError,
    InputError,
    TraceError,
    UnknownGroupError,
    WidthError,
)

TOL = 1e-12


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class Net(nn.Module):
    """conv1 (a group of 8 = 2 blocks of 4: it feeds a grouped conv), gconv + GroupNorm
    (uniform replication), conv2 into a LayerNorm over channels, a plain fc head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.gn = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 6, 1)
        self.ln = nn.LayerNorm(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.gn(self.gconv(x)))
        x = self.conv2(x).mean((2, 3))
        return self.fc(self.ln(x))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net().double().eval(), torch.randn(2, 3, 6, 6, dtype=torch.float64)


def raises(exc, *fragments):
    """pytest.raises that also checks the message contains every fragment."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *a):
            ok = self.ctx.__exit__(*a)
            msg = str(self.info.value)
            for f in fragments:
                assert f in msg, f"{f!r} not in message: {msg}"
            return ok

    return _Check()


# -- widths ----------------------------------------------------------------------------------
def test_width_smaller_than_current(net):
    m, x = net
    with (
        teacher_unchanged(m),
        raises(WidthError, "'conv1'", "width 8", "only grows", ">= 8", "got 4"),
    ):
        fxgrow.widen(m, x, widths={"conv1": 4})


@pytest.mark.parametrize("bad", [9.5, "12", True, None, 12.0])
def test_width_not_an_integer(net, bad):
    m, x = net
    with raises(WidthError, "'conv1'", "must be an integer", repr(bad)):
        fxgrow.widen(m, x, widths={"conv1": bad})


def test_width_equal_to_current_is_a_no_op(net):
    m, x = net
    s = fxgrow.widen(m, x, widths={"conv1": 8})
    assert s.conv1.out_channels == 8 and fxgrow.compare(m, s, x).max_rel == 0


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf"), "2", True, -1])
def test_factor_not_a_number_at_least_one(net, bad):
    m, x = net
    with raises(WidthError, "factor must be a number >= 1", repr(bad)):
        fxgrow.widen(m, x, factor=bad)


def test_neither_widths_nor_factor(net):
    m, x = net
    with raises(InputError, "widths=", "factor="):
        fxgrow.widen(m, x)


def test_widths_not_a_mapping(net):
    m, x = net
    with raises(InputError, "widths must be a mapping"):
        fxgrow.widen(m, x, widths=[("conv1", 12)])


# -- names -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "typo, suggestion", [("conv_1", "'conv1'"), ("convv2", "'conv2'"), ("gcon", "'gconv'")]
)
def test_unknown_group_suggests_the_closest(net, typo, suggestion):
    m, x = net
    with raises(UnknownGroupError, repr(typo), "did you mean", suggestion):
        fxgrow.widen(m, x, widths={typo: 16})


def test_unknown_group_without_a_close_name_says_how_to_list_them(net):
    m, x = net
    with raises(UnknownGroupError, "'zzz'", "fxgrow.groups(model, inputs)"):
        fxgrow.plan(m, x, widths={"zzz": 16})


def test_unknown_node_for_deepen_suggests_the_closest(net):
    m, x = net
    with raises(UnknownGroupError, "'rellu'", "did you mean", "'relu'"):
        fxgrow.deepen(m, x, after="rellu")


def test_blocked_group_names_its_blocker(net):
    m, x = net
    with raises(BlockedGroupError, "'fc'", "cannot be widened exactly", "model output"):
        fxgrow.widen(m, x, widths={"fc": 8})


def test_plan_for_another_model(net):
    m, x = net
    other = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU(), nn.Conv2d(5, 2, 1)).double().eval()
    plan = fxgrow.plan(other, x, factor=2)
    with raises(InputError, "the plan names group", "which this model does not have"):
        fxgrow.widen(m, x, plan=plan)


# -- widths that cannot be met exactly: the nearest exact widths ------------------------------
def test_normalised_group_says_nearest_exact_widths(net):
    m, x = net
    # conv2 feeds a LayerNorm over channels: whole multiples of 6 only
    with raises(
        WidthError,
        "'conv2'",
        "cannot be widened exactly to 9",
        "normalisation",
        "Nearest exact widths: 6, 12",
    ):
        fxgrow.widen(m, x, widths={"conv2": 9})
    # gconv feeds a GroupNorm(2): whole multiples of its width
    with raises(WidthError, "'gconv'", "to 13", "Nearest exact widths: 8, 16"):
        fxgrow.widen(m, x, widths={"gconv": 13})
    s = fxgrow.widen(m, x, widths={"conv2": 12, "gconv": 16})
    assert fxgrow.compare(m, s, x).max_rel <= TOL


class GroupedOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.gconv = nn.Conv2d(8, 4, 3, padding=1, groups=2)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.gconv(F.relu(self.conv1(x)))))


def test_grouped_conv_says_nearest_exact_widths():
    m, x = GroupedOnly().double().eval(), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    # conv1's 8 channels are 2 blocks of 4 (the grouped conv's groups): even widths only
    with raises(
        WidthError,
        "'conv1'",
        "to 9",
        "unit of 4 channels repeats 2 times",
        "Nearest exact widths: 8, 10",
    ):
        fxgrow.widen(m, x, widths={"conv1": 9})
    s = fxgrow.widen(m, x, widths={"conv1": 10})
    assert s.conv1.out_channels == 10 and s.gconv.in_channels == 10
    assert fxgrow.compare(m, s, x).max_rel <= TOL


def test_factor_is_rounded_up_to_the_nearest_exact_width(net):
    """``factor`` never refuses: each group takes the nearest exact width at or above the
    factor (documented in ``make_plan``); the plan shows the widths before anything changes."""
    m, x = net
    plan = fxgrow.plan(m, x, factor=1.3)
    widths = {c.group: (c.old_width, c.new_width) for c in plan.changes}
    assert widths == {
        "conv1": (8, 12),  # 2 blocks of 4 units: 4 * 1.3 -> 6 units per block
        "gconv": (8, 16),  # GroupNorm: whole multiples only -> 2x
        "conv2": (6, 12),
    }  # LayerNorm: whole multiples only -> 2x
    assert "conv1" in str(plan) and "8 -> 12" in str(plan)
    assert fxgrow.compare(m, fxgrow.widen(m, x, plan=plan), x).max_rel <= TOL


class TwoGroupsOneNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 3)
        self.ln = nn.LayerNorm(6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.ln(torch.cat([self.a(x), self.b(x)], -1)))


def test_norm_over_two_groups_must_grow_together():
    m, x = TwoGroupsOneNorm().double().eval(), torch.randn(2, 4, dtype=torch.float64)
    with raises(WidthError, "ln", "normalises over groups", "'a'", "'b'", "same whole factor"):
        fxgrow.widen(m, x, widths={"a": 6})
    s = fxgrow.widen(m, x, widths={"a": 6, "b": 6})
    assert fxgrow.compare(m, s, x).max_rel <= TOL


# -- models that cannot be captured ------------------------------------------------------------
class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor value: neither fx nor export
            return self.fc(x)
        return -self.fc(x)


def test_untraceable_model_raises_trace_error():
    m, x = DataDependent().eval(), torch.randn(2, 4)
    with raises(
        TraceError,
        "torch.fx could not trace DataDependent",
        "leaf_modules",
        "torch.export could not capture DataDependent",
    ):
        fxgrow.widen(m, x, factor=2)
    with raises(TraceError, "torch.fx could not trace", "control flow"):
        fxgrow.widen(m, x, factor=2, frontend="fx")


def test_not_a_module_raises_trace_error():
    with raises(TraceError, "expected a torch.nn.Module", "function"):
        fxgrow.widen(lambda x: x, torch.randn(2, 4), factor=2)


def test_unknown_frontend(net):
    m, x = net
    with raises(InputError, "frontend must be 'auto', 'fx' or 'export'", "'onnx'"):
        fxgrow.widen(m, x, factor=2, frontend="onnx")


# -- example inputs -------------------------------------------------------------------------------
def test_input_of_the_wrong_shape(net):
    m, x = net
    with raises(
        InputError,
        "does not run on the example inputs ((2, 4, 6, 6))",
        "Pass inputs of the shape, dtype and device the model expects",
    ):
        fxgrow.widen(m, torch.randn(2, 4, 6, 6, dtype=torch.float64), factor=2)


def test_input_of_the_wrong_dtype(net):
    m, x = net
    with raises(InputError, "float32", "dtype"):
        fxgrow.widen(m, x.float(), factor=2)


def test_wrong_number_of_inputs(net):
    m, x = net
    with raises(InputError, "does not run on the example inputs", "number"):
        fxgrow.widen(m, (x, x), factor=2)


def test_inputs_not_a_tensor_or_tuple(net):
    m, x = net
    with raises(InputError, "example_inputs must be a tensor or a tuple", "dict"):
        fxgrow.widen(m, {"x": x}, factor=2)


def test_input_on_another_device(net):
    m, x = net
    with raises(
        InputError, "example input 0 is on meta", "parameters are on cpu", "move one to the other"
    ):
        fxgrow.widen(m, x.to("meta"), factor=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_input_on_cuda_model_on_cpu(net):
    m, x = net
    with raises(InputError, "example input 0 is on cuda", "parameters are on cpu"):
        fxgrow.widen(m, x.cuda(), factor=2)


def test_compare_mode(net):
    m, x = net
    with raises(InputError, "mode must be 'eval' or 'train'", "'training'"):
        fxgrow.compare(m, m, x, mode="training")


# -- train mode ------------------------------------------------------------------------------------
class BNDrop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.conv2(self.drop(torch.relu(self.bn(self.conv1(x)))))


def test_model_in_train_mode():
    """A model in train mode is widened as it is.  fxgrow never runs it in train mode behind
    the user's back: its flags and buffers (BatchNorm running statistics) stay as they were,
    verification compares in eval mode, and the student keeps the teacher's mode.

    What is preserved: in eval mode (running statistics) the student is exact; in train mode
    (batch statistics, dropout off) it is exact too, because replicas of a channel have the
    same batch statistics.  What is not: dropout masks (random per element) -- ``compare``
    turns dropout off in train mode -- and an identity BatchNorm inserted by ``deepen``, which
    is the identity only with its running statistics (eval mode)."""
    m = BNDrop().double().train()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    with teacher_unchanged(m):
        s = fxgrow.widen(m, x, factor=2)
        assert m.training and all(mod.training for mod in m.modules())
        assert s.training and s.bn.training
        assert fxgrow.compare(m, s, x, mode="eval").max_rel <= TOL
        assert fxgrow.compare(m, s, x, mode="train").max_rel <= TOL
        d = fxgrow.deepen(m, x, after="relu", batchnorm=True)
        assert fxgrow.compare(m, d, x, mode="eval").max_rel <= 1e-10
        assert fxgrow.compare(m, d, x, mode="train").max_rel > 1e-2
    assert torch.equal(s.bn.running_mean[:4], m.bn.running_mean)


# -- a module called twice ----------------------------------------------------------------------
class SharedOnInput(nn.Module):
    """``shared`` reads the model input and a hidden tensor: its input space is both."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 3, 1)
        self.shared = nn.Conv2d(3, 5, 1)
        self.head = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.shared(x)) + self.shared(torch.relu(self.proj(x))))


def test_module_called_twice():
    m = SharedOnInput().double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    # the shared conv reads the model input, so proj's channels (its other input) are fixed
    with raises(BlockedGroupError, "'proj'", "model input"):
        fxgrow.widen(m, x, widths={"proj": 6})
    # its output grows at both calls with one map
    s = fxgrow.widen(m, x, widths={"shared": 8})
    assert s.shared.out_channels == 8 and s.head.in_channels == 8
    assert fxgrow.compare(m, s, x).max_rel <= TOL


# -- tied weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize("untie", [False, True])
def test_tied_embedding_and_output_projection(untie):
    m, ids = TiedLM().double().eval(), torch.randint(0, 10, (2, 5))
    with teacher_unchanged(m):
        s = fxgrow.widen(m, ids, factor=2, untie=untie)
    assert s.emb.weight.shape == (10, 12)
    assert (s.out.weight is s.emb.weight) == (not untie)
    assert fxgrow.compare(m, s, ids).max_rel <= TOL


class TiedTransposedConv(nn.Module):
    """One weight used as a conv 4 -> 6 and, transposed, as a conv 6 -> 4."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.w = nn.Parameter(torch.randn(6, 4, 1, 1))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        h = F.relu(F.conv2d(self.stem(x), self.w))
        return self.head(F.conv2d(h, self.w.transpose(0, 1)))


def test_tied_weights_that_cannot_be_compensated():
    m = TiedTransposedConv().double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with raises(BlockedGroupError, "'w'", "both copied", "divided", "untie the weights"):
        fxgrow.widen(m, x, widths={"w": 8})
    s = fxgrow.widen(m, x, factor=2)  # nothing else can grow: the student is the teacher
    assert fxgrow.compare(m, s, x).max_rel == 0


# -- deepen ------------------------------------------------------------------------------------------
class GeluNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_deepen_after_a_non_idempotent_activation():
    m, x = GeluNet().double().eval(), torch.randn(3, 4, dtype=torch.float64)
    with raises(DeepenError, "'act'", "GELU", "not idempotent", "kind='residual'"):
        fxgrow.deepen(m, x, after="act")
    s = fxgrow.deepen(m, x, after="act", kind="residual")
    assert fxgrow.compare(m, s, x).max_rel <= TOL


def test_deepen_bad_options(net):
    m, x = net
    with raises(InputError, "kind must be", "'wide'"):
        fxgrow.deepen(m, x, after="relu", kind="wide")
    with raises(InputError, "after= names no node"):
        fxgrow.deepen(m, x, after=[])


class _Res(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.l(x)


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b, self.c = _Res(), _Res()

    def forward(self, x):
        return self.b(self.c(self.b(x)))


def test_deepen_block_says_why_a_module_is_no_block():
    m, x = CalledTwice().double().eval(), torch.randn(3, 4, dtype=torch.float64)
    with raises(
        UnknownGroupError,
        "no residual block named 'b'",
        "called more than once",
        "residual blocks: c",
    ):
        fxgrow.deepen(m, x, after="b", kind="block")
    s = fxgrow.deepen(m, x, after="c", kind="block")
    assert fxgrow.compare(m, s, x).max_rel <= TOL


def test_deepen_on_an_ambiguous_3d_tensor_names_the_node():
    m, x = GeluNet().double().eval(), torch.randn(3, 5, 4, dtype=torch.float64)
    with raises(
        InputError,
        "after node 'x'",
        "channels-first or channels-last",
        "layer='conv' or layer='linear'",
    ):
        fxgrow.deepen(m, x, after="x")


def test_blocked_group_points_to_the_widenable_group_of_its_module():
    m, ids = TiedLM().eval(), torch.randint(0, 10, (2, 5))
    with raises(BlockedGroupError, "group 'emb'", "vocabulary", "did you mean", "'emb#2'"):
        fxgrow.widen(m, ids, widths={"emb": 8})
    assert fxgrow.widen(m, ids, widths={"emb#2": 8}).emb.embedding_dim == 8
