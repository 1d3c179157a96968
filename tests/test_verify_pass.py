"""VerifyPass checks against its own copy of the reference, and blames the passes before it."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.fx.passes.infra.pass_base import PassResult
from torch.fx.passes.infra.pass_manager import PassManager

import fxgrow
from fxgrow.passes import VerifyPass, WidenPass

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def scale_fc_in_place(gm: torch.fx.GraphModule) -> PassResult:
    """A broken user pass: changes a weight in place (shared with the traced teacher)."""
    with torch.no_grad():
        gm.fc.weight.mul_(2)
    return PassResult(gm, True)


def test_in_place_pass_cannot_change_the_reference():
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18().eval()
    with torch.no_grad():
        expected = teacher(X)
    verify = VerifyPass(teacher, X)
    gm = fxgrow.trace(teacher)  # shares the teacher's parameters
    pm = PassManager([WidenPass(X, factor=1.5), scale_fc_in_place, verify])
    with pytest.raises(Exception) as info:  # PassManager wraps what a pass raises
        pm(gm)
    err = info.value.__cause__
    assert isinstance(err, fxgrow.PreservationError)
    assert str(err).startswith("VerifyPass: the graph no longer computes the reference's")
    assert "A pass that ran before this check" in str(err) and "fxgrow's rules" not in str(err)
    assert verify.last.max_abs > 0.1
    # the copy is independent of the teacher: the reference still gives the teacher's outputs
    with torch.no_grad():
        assert torch.equal(verify.reference(X), expected)
    assert all(
        p.data_ptr() != q.data_ptr()
        for p, q in zip(verify.reference.parameters(), teacher.parameters())
    )


def test_in_place_pass_on_the_teacher_itself_is_caught():
    """Without the copy, an in-place pass on the traced teacher changed the reference too and
    verification passed on a wrong student."""
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18().eval()
    verify = VerifyPass(teacher, X)
    gm = fxgrow.trace(teacher)
    scale_fc_in_place(gm)  # teacher.fc.weight doubled as well
    with pytest.raises(fxgrow.PreservationError, match="VerifyPass"):
        verify(gm)


def test_verify_pass_accepts_a_correct_pipeline():
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18().eval()
    verify = VerifyPass(teacher, X)
    result = PassManager([WidenPass(X, factor=1.5), verify])(fxgrow.trace(teacher))
    assert verify.last.max_rel < 1e-5 and result.graph_module.conv1.out_channels == 96
