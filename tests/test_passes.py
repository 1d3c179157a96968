"""fxgrow in compiler pipelines: fx PassManager passes, torch.compile of students, and the
analysis-only torch.compile backend."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.fx.experimental.optimization import fuse
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.fx.passes.infra.pass_manager import PassManager, pass_result_wrapper

import fxgrow
from fxgrow.compile import InspectBackend, _path_from_name, lift_parameters
from fxgrow.passes import DeepenPass, GrowPass, VerifyPass, WidenPass

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def fuse_pass(gm: torch.fx.GraphModule) -> PassResult:
    """Conv-BN fusion (torch.fx.experimental.optimization.fuse) as an fx pass."""
    return PassResult(fuse(gm), True)


def module_types(gm: torch.fx.GraphModule) -> set[str]:
    return {
        type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes if n.op == "call_module"
    }


def test_passes_are_passbase():
    for p in (
        WidenPass(X, factor=2),
        DeepenPass(X, after="relu"),
        GrowPass(X, blocks={}),
        VerifyPass(resnet18(), X),
    ):
        assert isinstance(p, PassBase)


def test_fuse_then_widen_then_verify():
    teacher = resnet18()
    verify = VerifyPass(teacher, X)
    pm = PassManager([fuse_pass, WidenPass(X, factor=1.5), verify])
    result = pm(fxgrow.trace(teacher))
    student = result.graph_module
    assert result.modified
    assert "BatchNorm2d" not in module_types(student)  # fused
    assert student.conv1.out_channels == 96  # widened
    assert verify.last.max_rel < 1e-5
    assert fxgrow.compare(teacher, student, X).max_rel < 1e-5


def test_widen_then_fuse_and_deepen_in_one_manager():
    teacher = resnet18()
    verify = VerifyPass(teacher, X)
    # stage growth reads module paths from node.meta["nn_module_stack"], which fuse's
    # re-tracing drops: grow before fusing
    pm = PassManager(
        [
            WidenPass(X, widths={"layer1.0.conv1": 128}),
            GrowPass(X, blocks={"layer3": 3}),
            pass_result_wrapper(lambda gm: fuse(gm)),
            DeepenPass(X, after="layer2.0.relu", kind="residual"),
            verify,
        ]
    )
    student = pm(fxgrow.trace(teacher)).graph_module
    assert student.get_submodule("layer1.0.conv1").out_channels == 128
    assert "BatchNorm2d" not in module_types(student)
    assert any(n.startswith("layer3.2") for n, _ in student.named_modules())
    assert any("_deepen" in n for n, _ in student.named_modules())
    assert fxgrow.compare(teacher, student, X).max_rel < 1e-5


def test_verify_pass_catches_a_broken_pass():
    teacher = resnet18()

    def perturb(gm: torch.fx.GraphModule) -> PassResult:
        with torch.no_grad():
            gm.fc.bias.add_(1.0)
        return PassResult(gm, True)

    pm = PassManager([WidenPass(X, factor=1.5), perturb, VerifyPass(teacher, X)])
    with pytest.raises(Exception) as info:  # PassManager wraps the pass's error
        pm(fxgrow.trace(teacher))
    assert isinstance(info.value.__cause__, fxgrow.PreservationError)


def test_compiled_student_matches_eager():
    """The default backend (inductor) compiles a grown student; same outputs as eager."""
    torch.manual_seed(0)
    teacher = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 4),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    student = fxgrow.grow(teacher, x, width=2.0)
    torch._dynamo.reset()
    compiled = torch.compile(student)
    with torch.no_grad():
        eager, out = student(x), compiled(x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, teacher(x), rtol=1e-5, atol=1e-5)


def test_inspect_backend_reports_groups_and_runs_unchanged():
    teacher = resnet18()
    backend = InspectBackend(teacher)
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(teacher, backend=backend)(X)
        assert torch.equal(out, teacher(X))
    (report,) = backend.reports
    assert report.error is None
    assert {g.name for g in report.groups} == {g.name for g in fxgrow.groups(teacher, X)}
    assert "conv1.weight" in report.parameters.values()
    assert "layer1.0.bn1.running_mean" in report.parameters.values()
    assert "14 channel groups, 12 widenable" in str(report)
    # without the model, Dynamo's input names give the same paths
    anonymous = InspectBackend()
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(teacher, backend=anonymous)(X)
    assert anonymous.reports[0].parameters == report.parameters


def test_inspect_backend_survives_what_it_cannot_analyse(capsys):
    class Odd(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x, dim=1).abs()

    backend = InspectBackend(verbose=True)
    torch._dynamo.reset()
    out = torch.compile(Odd(), backend=backend)(torch.randn(2, 8))
    assert out.shape == (2, 5)
    assert "channel groups" in capsys.readouterr().err or backend.reports[0].error


def test_dynamo_names_to_paths():
    assert (
        _path_from_name("L_self_modules_layer1_modules_0_modules_conv1_parameters_weight_")
        == "layer1.0.conv1.weight"
    )
    assert _path_from_name("L_self_modules_bn1_buffers_running_mean_") == "bn1.running_mean"
    assert _path_from_name("L_self_parameters_cls_token_") == "cls_token"
    assert _path_from_name("L_x_") is None
    gm = torch.fx.symbolic_trace(nn.Linear(2, 2))
    lifted, inputs, mapping = lift_parameters(gm, [torch.randn(1, 2)])
    assert mapping == {} and len(inputs) == 1
