"""Net2DeeperNet (``fxgrow.deepen``) on tiny models and torchvision models (random init).

Covered: identity insertions after ReLUs (vgg11_bn, resnet18) and their modules, the identity
BatchNorm (exact in eval mode, not in train mode), the idempotence rule that refuses an identity
insertion after GELU / SiLU and the zero residual block that replaces it, the choice between an
identity Linear and an identity conv by tensor layout, name errors, and a training step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from helpers import teacher_unchanged, train_step

import fxgrow
from fxgrow.rewrite.activation import is_idempotent

EXACT = 1e-6  # identity insertions copy values: any error is float32 rounding
BN_EXACT = 1e-5  # the identity BatchNorm computes (h - m) / sqrt(v + eps) * sqrt(v + eps) + m


def randn(*shape: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def seeded(make, *args, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return make(*args, **kwargs).eval()


def deepen_exact(model: nn.Module, x, tol: float = EXACT, **kwargs) -> torch.fx.GraphModule:
    """deepen(...) with the teacher checked bit-identical and the student checked exact."""
    with teacher_unchanged(model):
        student = fxgrow.deepen(model, x, verify=False, **kwargs)
        err = fxgrow.compare(model, student, x)
    assert err.max_rel <= tol, err
    return student


def new_modules(teacher: nn.Module, student: nn.Module) -> dict[str, nn.Module]:
    """Leaf modules of the student that the teacher does not have."""
    old = {name for name, _ in teacher.named_modules()}
    return {
        name: m for name, m in student.named_modules() if name not in old and not list(m.children())
    }


def node(gm: torch.fx.GraphModule, name: str) -> torch.fx.Node:
    return next(n for n in gm.graph.nodes if n.name == name)


def inserted_chain(student: torch.fx.GraphModule, name: str) -> list[nn.Module]:
    """The modules the student runs between node ``name`` and that node's former users: the
    node must have one user, and the chain follows single-user call_module nodes whose
    targets contain ``_deepen``."""
    chain, n = [], node(student, name)
    while len(n.users) == 1:
        (u,) = n.users
        if u.op != "call_module" or "_deepen" not in u.target:
            break
        chain.append(student.get_submodule(u.target))
        n = u
    return chain


def is_identity_conv(m: nn.Module, kernel_size: int = 3) -> bool:
    if not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return False
    c, k = m.in_channels, kernel_size
    d = m.weight.dim() - 2
    expect = torch.zeros_like(m.weight)
    expect[(slice(None), slice(None)) + (k // 2,) * d] = torch.eye(c)
    return (
        m.out_channels == c
        and m.groups == 1
        and m.kernel_size == (k,) * d
        and m.stride == (1,) * d
        and m.padding == (k // 2,) * d
        and m.dilation == (1,) * d
        and torch.equal(m.weight, expect)
        and torch.equal(m.bias, torch.zeros(c))
    )


def is_identity_linear(m: nn.Module, c: int | None = None) -> bool:
    return (
        isinstance(m, nn.Linear)
        and m.in_features == m.out_features
        and (c is None or m.in_features == c)
        and torch.equal(m.weight, torch.eye(m.in_features))
        and torch.equal(m.bias, torch.zeros(m.out_features))
    )


def activation_nodes(model: nn.Module, kind: type) -> list[str]:
    gm = fxgrow.trace(model)
    return [
        n.name
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), kind)
    ]


# -- models, built once -----------------------------------------------------------------------
X_IMG = randn(2, 3, 32, 32)


@pytest.fixture(scope="module")
def vgg11_bn() -> nn.Module:
    return seeded(torchvision.models.vgg11_bn)


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return seeded(torchvision.models.resnet18)


@pytest.fixture(scope="module")
def convnext():
    """convnext_tiny, an input, its first GELU node, and the residual student after it."""
    model = seeded(torchvision.models.convnext_tiny)
    x = randn(1, 3, 32, 32)
    gelu = activation_nodes(model, nn.GELU)[0]
    with teacher_unchanged(model):
        student = fxgrow.deepen(model, x, after=gelu, kind="residual", verify=False)
    return model, x, gelu, student


def mlp(act: nn.Module) -> nn.Module:
    return seeded(nn.Sequential, nn.Linear(5, 7), act, nn.Linear(7, 3))


class Tokens(nn.Module):
    """[B, T, C] tokens through Linear -> relu -> Linear (channels last)."""

    def __init__(self, c: int = 10) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, c), nn.Linear(c, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class ChannelsLast(nn.Module):
    """A conv, then a per-pixel MLP on [N, H, W, C] (as in ConvNeXt), then back to [N, C, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4)

    def forward(self, x):
        h = self.conv(x).permute(0, 2, 3, 1)
        return self.fc2(self.act(self.fc1(h))).permute(0, 3, 1, 2)


# -- identity insertions after ReLU on torchvision models --------------------------------------
@pytest.mark.parametrize("name", ["vgg11_bn", "resnet18"])
def test_identity_after_every_relu(name, request):
    teacher = request.getfixturevalue(name)
    relus = activation_nodes(teacher, nn.ReLU)
    assert len(relus) == {"vgg11_bn": 10, "resnet18": 17}[name]
    student = deepen_exact(teacher, X_IMG, after=relus, kind="identity")

    gm = fxgrow.trace(teacher)
    targets = {n.name: n.target for n in gm.graph.nodes if n.name in relus}
    new = new_modules(teacher, student)
    assert len(new) == 2 * len(relus)  # one identity layer and one ReLU copy per insertion
    for r in relus:
        chain = inserted_chain(student, r)
        assert len(chain) == 2, (r, chain)
        layer, act = chain
        if targets[r].startswith("classifier."):  # vgg classifier: [N, 4096]
            assert is_identity_linear(layer, 4096), (r, layer)
        else:  # [N, C, H, W]
            assert is_identity_conv(layer), (r, layer)
        assert isinstance(act, nn.ReLU)
    # the inserted layers are ordinary parameters of the student
    names = {k for k, _ in student.named_parameters()}
    assert sum(".layer.weight" in k and "_deepen" in k for k in names) == len(relus)


def test_module_called_twice_is_deepened_at_every_call(resnet18):
    # layer1.0.relu runs twice in a BasicBlock (before conv2 and after the add)
    student = deepen_exact(resnet18, X_IMG, after="layer1.0.relu")
    for n in ("layer1_0_relu", "layer1_0_relu_1"):
        layer, act = inserted_chain(student, n)
        assert is_identity_conv(layer) and isinstance(act, nn.ReLU)
    assert {k for k in new_modules(resnet18, student)} == {
        f"layer1.0.relu_deepen{k}.{part}" for k in (0, 1) for part in ("layer", "act")
    }


@pytest.mark.parametrize("k", [1, 5])
def test_kernel_size(resnet18, k):
    # after the max pool (not an activation): the identity conv only, no activation copy
    student = deepen_exact(resnet18, X_IMG, after="maxpool", kernel_size=k)
    (layer,) = inserted_chain(student, "maxpool")
    assert is_identity_conv(layer, kernel_size=k)


def test_even_kernel_size_is_refused(resnet18):
    # an even kernel with padding k // 2 changes the spatial size: no identity conv exists.
    # This is a wrong option, not a preservation failure of fxgrow's rules.
    with pytest.raises(fxgrow.InputError):
        fxgrow.deepen(resnet18, X_IMG, after="relu", kernel_size=2)


# -- batch norm ---------------------------------------------------------------------------------
BN_AFTER = ["relu", "layer2_0_relu"]


@pytest.fixture(scope="module")
def resnet18_bn(resnet18) -> torch.fx.GraphModule:
    """resnet18 with identity conv + BatchNorm + ReLU after two ReLUs (checked exact)."""
    return deepen_exact(resnet18, X_IMG, tol=BN_EXACT, after=BN_AFTER, batchnorm=True)


def test_batchnorm_exact_in_eval_mode_only(resnet18, resnet18_bn):
    after, student = BN_AFTER, resnet18_bn
    for a in after:
        layer, bn, act = inserted_chain(student, a)
        assert is_identity_conv(layer) and isinstance(act, nn.ReLU)
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == layer.out_channels
        # eval-mode identity: weight sqrt(running_var + eps), bias running_mean
        assert torch.allclose(bn.weight, torch.sqrt(bn.running_var + bn.eps))
        assert torch.equal(bn.bias, bn.running_mean)
    # eval mode is exact on other inputs too (the statistics are frozen)
    x8 = randn(8, 3, 32, 32, seed=2)
    assert fxgrow.compare(resnet18, student, x8).max_rel <= BN_EXACT
    # train mode: the inserted BatchNorm normalises with the batch's statistics, so it is no
    # longer the identity -- the documented caveat of batchnorm=True
    train = fxgrow.compare(resnet18, student, x8, mode="train")
    assert train.mode == "train"
    assert train.max_rel > 1e-4, train
    # without batchnorm=True, train mode stays exact
    plain = deepen_exact(resnet18, X_IMG, after=after)
    assert fxgrow.compare(resnet18, plain, x8, mode="train").max_rel <= EXACT


def test_batchnorm_error_is_rounding_only_in_float64():
    m = seeded(nn.Sequential, nn.Conv1d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv1d(6, 2, 1))
    m, x = m.double(), randn(4, 3, 10, dtype=torch.float64)
    student = deepen_exact(m, x, tol=1e-12, after="1", batchnorm=True)
    layer, bn, act = inserted_chain(student, "_1")
    assert is_identity_conv(layer) and isinstance(bn, nn.BatchNorm1d)
    assert layer.weight.dtype == bn.weight.dtype == torch.float64


def test_batchnorm_needs_channels_first():
    m = mlp(nn.ReLU())
    with pytest.raises(fxgrow.InputError, match="channels-first"):
        fxgrow.deepen(m, randn(4, 5), after="1", batchnorm=True)


def test_student_modes_follow_teacher():
    # a teacher in training mode gives a student in training mode, inserted modules included
    m = seeded(nn.Sequential, nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)).train()
    student = fxgrow.deepen(m, randn(2, 3, 8, 8), after="1", batchnorm=True, verify=False)
    assert student.training
    assert {name: mod.training for name, mod in student.named_modules()} == {
        name: True for name, _ in student.named_modules()
    }


# -- non-idempotent activations: refuse identity, residual is exact ------------------------------
@pytest.mark.parametrize("act", [nn.GELU(), nn.SiLU()], ids=["GELU", "SiLU"])
def test_identity_after_gelu_silu_refused_residual_exact(act):
    m, x = mlp(act), randn(4, 5)
    with teacher_unchanged(m), pytest.raises(fxgrow.DeepenError) as e:
        fxgrow.deepen(m, x, after="1")
    assert "kind='residual'" in str(e.value) and type(act).__name__ in str(e.value)
    assert isinstance(e.value, fxgrow.FxgrowError)

    student = deepen_exact(m, x, after="1", kind="residual")
    new = new_modules(m, student)
    assert set(new) == {"1_deepen0.layer1", "1_deepen0.act", "1_deepen0.layer2"}
    first, copy_act, last = new["1_deepen0.layer1"], new["1_deepen0.act"], new["1_deepen0.layer2"]
    assert isinstance(first, nn.Linear) and first.in_features == first.out_features == 7
    assert first.weight.abs().sum() > 0  # f's first layer is random (it can learn) ...
    assert not last.weight.any() and not last.bias.any()  # ... its last layer zero: f(h) = 0
    assert type(copy_act) is type(act)
    # the block is h + f(h): an add reads the original node
    adds = [n for n in node(student, "_1").users if n.op == "call_function"]
    assert len(adds) == 1
    train_step(student, x)


def test_functional_gelu_refused_residual_exact():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(F.gelu(self.a(x)))

    m, x = seeded(Fn), randn(3, 4)
    with pytest.raises(fxgrow.DeepenError, match="kind='residual'"):
        fxgrow.deepen(m, x, after="gelu")
    student = deepen_exact(m, x, after="gelu", kind="residual")
    assert isinstance(student.get_submodule("gelu_deepen0.act"), nn.GELU)


def test_convnext_first_gelu(convnext):
    model, x, gelu, student = convnext
    assert gelu == "features_1_0_block_4"
    with teacher_unchanged(model), pytest.raises(fxgrow.DeepenError, match="kind='residual'"):
        fxgrow.deepen(model, x, after=gelu)
    assert fxgrow.compare(model, student, x).max_rel <= EXACT


def test_channels_last_4d_uses_linear(convnext):
    """[N, H, W, C] tensors (ConvNeXt's per-pixel MLP) have their channels last: the inserted
    layers must act on C -- a Linear -- not treat H as channels."""
    m, x = seeded(ChannelsLast), randn(2, 3, 5, 5)
    other = randn(2, 3, 7, 7, seed=3)  # another spatial size
    for kind, after in [("identity", "fc1"), ("residual", "act")]:
        student = deepen_exact(m, x, after=after, kind=kind)
        layers = [mod for name, mod in new_modules(m, student).items() if ".layer" in name]
        assert layers and all(isinstance(l, nn.Linear) and l.in_features == 6 for l in layers), (
            kind,
            layers,
        )
        assert fxgrow.compare(m, student, other).max_rel <= EXACT
    model, x, gelu, student = convnext
    layer1 = student.get_submodule("features.1.0.block.4_deepen0.layer1")
    assert isinstance(layer1, nn.Linear) and layer1.in_features == 384, layer1
    assert fxgrow.compare(model, student, randn(1, 3, 40, 40, seed=3)).max_rel <= EXACT


# -- the idempotence rule ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "act, expected",
    [
        (nn.ReLU(), True),
        (nn.ReLU6(), True),
        (nn.Hardtanh(-2, 3), True),
        (nn.GELU(), False),
        (nn.SiLU(), False),
        (nn.LeakyReLU(0.1), False),
        (nn.Sigmoid(), False),
        (nn.Tanh(), False),
    ],
    ids=lambda v: repr(v) if isinstance(v, nn.Module) else None,
)
def test_is_idempotent(act, expected):
    assert is_idempotent(act) is expected


@pytest.mark.parametrize("act", [nn.ReLU6(), nn.Hardtanh(-2, 3)], ids=["ReLU6", "Hardtanh"])
def test_identity_after_idempotent_activation_exact(act):
    m, x = mlp(act), 4 * randn(6, 5)  # large inputs: both clipping ends are reached
    student = deepen_exact(m, x, after="1")
    layer, copy_act = inserted_chain(student, "_1")
    assert is_identity_linear(layer, 7) and type(copy_act) is type(act)


# -- layer choice by layout --------------------------------------------------------------------
def test_linear_mlp_gets_identity_linear():
    m, x = mlp(nn.ReLU()), randn(4, 5)
    student = deepen_exact(m, x, after="1")
    layer, act = inserted_chain(student, "_1")
    assert is_identity_linear(layer, 7) and isinstance(act, nn.ReLU)
    # after a Linear (not an activation): the identity layer only
    student = deepen_exact(m, x, after="0")
    (layer,) = inserted_chain(student, "_0")
    assert is_identity_linear(layer, 7)
    train_step(student, x)


@pytest.mark.parametrize("shape", [(2, 5, 6), (2, 10, 6)], ids=["T!=C", "T==C"])
def test_tokens_get_identity_linear(shape):
    m, x = seeded(Tokens), randn(*shape)
    student = deepen_exact(m, x, after="relu")
    layer, act = inserted_chain(student, "relu")
    assert is_identity_linear(layer, 10) and isinstance(act, nn.ReLU)
    # the student is not tied to the example's sequence length
    assert fxgrow.compare(m, student, randn(2, 3, 6, seed=4)).max_rel <= EXACT


def test_vision_transformer_mlp():
    from torchvision.models.vision_transformer import VisionTransformer

    m = seeded(
        VisionTransformer,
        image_size=32,
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    x = randn(2, 3, 32, 32)
    gelu = "encoder.layers.encoder_layer_0.mlp.1"
    with pytest.raises(fxgrow.DeepenError):
        fxgrow.deepen(m, x, after=gelu)
    student = deepen_exact(m, x, after=gelu, kind="residual")
    assert isinstance(student.get_submodule(gelu + "_deepen0.layer1"), nn.Linear)
    student = deepen_exact(m, x, after="encoder.layers.encoder_layer_0.mlp.0")
    layer = student.get_submodule("encoder.layers.encoder_layer_0.mlp.0_deepen0.layer")
    assert is_identity_linear(layer, 32)


def test_channels_first_3d_gets_conv1d():
    m = seeded(nn.Sequential, nn.Conv1d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv1d(6, 2, 1))
    x = randn(2, 3, 10)
    student = deepen_exact(m, x, after="1")
    layer, act = inserted_chain(student, "_1")
    assert isinstance(layer, nn.Conv1d) and is_identity_conv(layer) and layer.in_channels == 6
    assert fxgrow.compare(m, student, randn(2, 3, 17, seed=5)).max_rel <= EXACT


def test_layer_override():
    m, x = seeded(ChannelsLast), randn(2, 3, 5, 5)
    student = deepen_exact(m, x, after="act", kind="residual", layer="linear")
    assert isinstance(student.get_submodule("act_deepen0.layer1"), nn.Linear)
    with pytest.raises(fxgrow.InputError, match="layer must be"):
        fxgrow.deepen(m, x, after="act", layer="dense")


# -- errors ------------------------------------------------------------------------------------
def test_unknown_name_suggests_close_match(resnet18):
    with pytest.raises(fxgrow.UnknownGroupError, match=r"'rleu'.*did you mean 'relu'"):
        fxgrow.deepen(seeded(Tokens), randn(2, 5, 6), after="rleu")
    with pytest.raises(fxgrow.UnknownGroupError, match=r"did you mean 'layer1.0.relu'"):
        fxgrow.deepen(resnet18, X_IMG, after="layer1.0.rlu")
    # one unknown name among known ones; UnknownGroupError is an InputError
    with pytest.raises(fxgrow.InputError, match="nothing_like_it"):
        fxgrow.deepen(mlp(nn.ReLU()), randn(4, 5), after=["1", "nothing_like_it"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(after=[]), "names no node"),
        (dict(after="1", kind="wider"), "kind must be"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(fxgrow.InputError, match=match):
        fxgrow.deepen(mlp(nn.ReLU()), randn(4, 5), **kwargs)


# -- training ------------------------------------------------------------------------------------
def test_student_trains(resnet18_bn):
    student = copy.deepcopy(resnet18_bn)  # the fixture stays untrained
    layer, bn, _ = inserted_chain(student, "layer2_0_relu")
    before = layer.weight.detach().clone(), bn.weight.detach().clone()
    train_step(student, X_IMG)
    # the inserted identity conv and BatchNorm learn
    assert not torch.equal(before[0], layer.weight) and not torch.equal(before[1], bn.weight)
