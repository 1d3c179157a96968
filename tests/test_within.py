"""within=: a submodule grown in place (a detector's backbone), the whole model verified, the
teacher untouched, and the refusals (no such submodule, never called, called twice, inputs
that are not tensors)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from helpers import snapshot, teacher_unchanged
from torch import nn

import fxgrow
from fxgrow.errors import (
    InputError,
    PreservationError,
    UnknownGroupError,
    UnsupportedModelError,
)
from fxgrow.within import record_call
from fxgrow.within.detections import compare_detections, verify_whole

pytestmark = pytest.mark.usefixtures("one_thread")

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
SIZE = 160


def calibrated_detector() -> tuple[nn.Module, torch.Tensor]:
    """A random-weight detector built for SIZE px whose backbone batch norms hold the
    statistics of the example image: its features are O(1), so its detections depend on the
    image (with the initial statistics MobileNet's features shrink to 1e-8)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(
        DETECTOR,
        weights=None,
        weights_backbone=None,
        min_size=SIZE,
        max_size=SIZE,
        box_score_thresh=0.0,
    )
    x = torch.rand(1, 3, SIZE, SIZE)
    call = record_call(model, "backbone", (x,))
    for m in call.module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    call.module.train()
    with torch.no_grad():
        call.module(*call.inputs)
    return model.eval(), x


@pytest.fixture(scope="module")
def grown():
    teacher, x = calibrated_detector()
    before = snapshot(teacher)
    backbone = teacher.backbone
    student = fxgrow.widen(teacher, x, factor=1.5, within="backbone")
    return teacher, x, student, before, backbone


def test_detector_backbone_grows_exactly(grown):
    teacher, _, student, before, backbone = grown
    assert type(student) is type(teacher) and student is not teacher
    assert isinstance(student.backbone, torch.fx.GraphModule)
    assert teacher.backbone is backbone and not isinstance(backbone, torch.fx.GraphModule)
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    # the backbone grew; the rest of the model is the teacher's, at the teacher's sizes
    t_params = dict(teacher.backbone.named_parameters())
    s_params = dict(student.backbone.named_parameters())
    wider = [k for k, v in s_params.items() if v.shape != t_params[k].shape]
    assert len(wider) > 50
    assert s_params["body.0.0.weight"].shape == (24, 3, 3, 3)  # 16 channels x 1.5
    for k in ("fpn.layer_blocks.0.0.weight", "fpn.layer_blocks.1.0.weight"):
        # the FPN's outputs stay 256 wide; its inner top-down stream grows
        assert s_params[k].shape == (256, 384, 3, 3) and t_params[k].shape == (256, 256, 3, 3)
    assert student.backbone.out_channels == 256
    t_all, s_all = dict(teacher.named_parameters()), dict(student.named_parameters())
    assert t_all.keys() == s_all.keys()
    outside = [k for k in t_all if not k.startswith("backbone.")]
    assert len(outside) > 10
    assert all(torch.equal(t_all[k], s_all[k]) and t_all[k] is not s_all[k] for k in outside)
    sub = fxgrow.growth_record(student.backbone).error
    assert sub.max_rel < 1e-5
    whole = fxgrow.growth_record(student.backbone).whole
    assert whole.detections == 100 and whole.unmatched == 0 and whole.max_rel < 1e-4


def test_grown_detector_runs_at_another_size(grown):
    teacher, _, student, _, _ = grown
    torch.manual_seed(1)
    y = [torch.rand(3, 192, 128)]
    with torch.no_grad():
        result = compare_detections(teacher.eval()(y), student.eval()(y))
    assert result.detections == 100 and result.unmatched == 0 and result.max_rel < 1e-4


def test_groups_and_plan_within(grown):
    teacher, x, _, _, _ = grown
    with teacher_unchanged(teacher):
        groups = fxgrow.groups(teacher, x, within="backbone")
        plan = fxgrow.plan(teacher, x, factor=1.5, within="backbone")
    assert len(groups) == 33 and sum(g.widenable for g in groups) == 30
    assert len(plan.changes) == 30


def test_whole_model_check_catches_a_wrong_backbone(grown):
    teacher, x, student, _, _ = grown
    wrong = copy.deepcopy(student)
    with torch.no_grad():
        wrong.backbone.get_parameter("body.0.0.weight")[:4] *= 1.5
    with pytest.raises(PreservationError, match="changes the whole model's detections"):
        verify_whole(teacher, wrong, (x,))


def test_unknown_path_suggests_the_closest(grown):
    teacher, x, _, _, _ = grown
    with pytest.raises(UnknownGroupError, match="no submodule 'backbon'; did you mean 'backbone'"):
        fxgrow.widen(teacher, x, factor=1.5, within="backbon")
    with pytest.raises(InputError, match="names the model itself"):
        fxgrow.groups(teacher, x, within="")


def test_inputs_that_are_not_tensors_are_refused(grown):
    teacher, x, _, _, _ = grown
    with pytest.raises(
        InputError,
        match="input 'x' of FeaturePyramidNetwork.forward is a OrderedDict, not a tensor",
    ):
        fxgrow.widen(teacher, x, factor=1.5, within="backbone.fpn")


class Outer(nn.Module):
    """A forward fx cannot trace (Python control flow on a value) around a traceable body,
    called with a keyword input; ``shared`` runs twice, ``unused`` never."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 4, 1),
        )
        self.shared = nn.Conv2d(4, 4, 1)
        self.unused = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(input=x)
        if float(h.mean()) > 100:  # data-dependent: not capturable whole
            h = -h
        return self.shared(self.shared(h))


def test_keyword_input_and_an_untraceable_outer_forward():
    torch.manual_seed(0)
    model, x = Outer().eval(), torch.randn(2, 3, 8, 8)
    with pytest.raises(fxgrow.TraceError):
        fxgrow.groups(model, x)
    with teacher_unchanged(model):
        student = fxgrow.widen(model, x, factor=2, within="body")
        # names inside within= are the submodule's own
        deeper = fxgrow.deepen(model, x, after="2", kind="residual", within="body")
        both = fxgrow.grow(model, x, width=1.5, within="body")
    assert student.body.get_parameter("0.weight").shape == (16, 3, 3, 3)
    assert both.body.get_parameter("0.weight").shape == (12, 3, 3, 3)
    with torch.no_grad():
        want = model(x)
        for s in (student, deeper, both):
            assert type(s) is Outer
            assert torch.allclose(s(x), want, rtol=1e-5, atol=1e-6)
            assert fxgrow.growth_record(s.body).whole.max_rel < 1e-5
    assert len(list(deeper.body.parameters())) > len(list(model.body.parameters()))
    with pytest.raises(InputError, match="as_graph=True and within= do not go together"):
        fxgrow.widen(model, x, factor=2, within="body", as_graph=True)


def test_submodule_never_called_or_called_twice():
    model, x = Outer().eval(), torch.randn(1, 3, 8, 8)
    with pytest.raises(InputError, match=r"Outer.forward never calls 'unused' \(Conv2d\)"):
        fxgrow.widen(model, x, factor=2, within="unused")
    with pytest.raises(UnsupportedModelError, match=r"calls 'shared' \(Conv2d\) 2 times"):
        fxgrow.groups(model, x, within="shared")


def test_cli_widen_within_backbone(capsys):
    from fxgrow.cli import main

    spec = (
        f"torchvision:{DETECTOR}?weights_backbone=none&min_size={SIZE}&max_size={SIZE}"
        f"&box_score_thresh=0"
    )
    code = main(
        [
            "widen",
            spec,
            "--input-shape",
            f"1,3,{SIZE},{SIZE}",
            "--factor",
            "1.5",
            "--within",
            "backbone",
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    import json

    doc = json.loads(out.out)
    assert doc["model"].endswith("[within backbone]") and len(doc["groups_changed"]) == 30
    assert doc["preservation"]["ok"]
    assert "whole model: 100 detections matched, 0 unmatched" in out.err
    code = main(
        ["inspect", spec, "--input-shape", f"1,3,{SIZE},{SIZE}", "--within", "backbon", "-q"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'backbone'" in err


def test_detections_matched_across_a_reorder_and_a_mask_jump():
    torch.manual_seed(0)
    n = 40
    boxes = torch.rand(n, 4) * 100
    boxes[:, 2:] += boxes[:, :2]
    t = {
        "boxes": boxes,
        "scores": torch.linspace(0.9, 0.5, n),
        "labels": torch.arange(n) % 3,
        "masks": torch.rand(n, 1, 16, 16),
    }
    order = torch.arange(n)
    order[[3, 4]] = order[[4, 3]]  # two near-tied detections swap places
    s = {k: v[order].clone() for k, v in t.items()}
    s["boxes"] = s["boxes"] + 1e-5
    s["masks"][7] = s["masks"][7].roll(1, dims=-1)  # one mask pasted a pixel over
    result = compare_detections([t], [s])
    assert (result.detections, result.unmatched, result.jumps) == (n, 0, 1)
    assert 1e-8 < result.max_rel < 1e-6  # the boxes' 1e-5 shift on a scale of ~200
    s["labels"][0] = 2 - s["labels"][0] % 3  # a detection of another class: no partner
    result = compare_detections([t], [s])
    assert result.unmatched == 2 and result.detections == n - 1
