"""``fxgrow.widen`` on an analysis or a plan already made: the same student as
``widen(model, x, ...)`` bit for bit, no second analysis, and a plan that does not fit refused."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torchvision

import fxgrow
from fxgrow import InputError, WidenPlan
from tests.helpers import teacher_unchanged


def resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(1)
    return resnet(), torch.randn(2, 3, 32, 32)


def assert_same_student(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    with torch.no_grad():
        out_a, out_b = (
            [t for t in torch.utils._pytree.tree_leaves(m(x)) if isinstance(t, torch.Tensor)]
            for m in (a, b)
        )
    assert (
        out_a and len(out_a) == len(out_b) and all(torch.equal(u, v) for u, v in zip(out_a, out_b))
    )


def test_analysis_and_plan_give_the_student_of_widen_bit_for_bit(r18):
    m, x = r18
    with teacher_unchanged(m):
        reference = fxgrow.widen(m, x, factor=2)
        a = fxgrow.analyze(m, x)
        p = fxgrow.plan(a, factor=2)
        assert p.analysis is a and len(p.changes) == 12
        for student in (
            fxgrow.widen(a, factor=2),
            fxgrow.widen(p),
            fxgrow.widen(m, x, plan=p),
            fxgrow.widen(a, plan=p),
            fxgrow.widen(p, x),  # the inputs the analysis was made on: accepted
        ):
            assert student.conv1.out_channels == 128
            assert_same_student(reference, student, x)
        # the analysis form takes widen's other options too
        by_name = fxgrow.widen(m, x, widths={"layer1.0.conv1": 96}, split="random", seed=3)
        again = fxgrow.widen(a, widths={"layer1.0.conv1": 96}, split="random", seed=3)
        assert_same_student(by_name, again, x)
    assert fxgrow.compare(m, reference, x).max_rel <= 1e-5


def test_a_plan_or_an_analysis_is_not_analysed_again(r18, monkeypatch):
    import fxgrow.analysis.dependency as dependency
    import fxgrow.api as api

    m, x = r18
    a = fxgrow.analyze(m, x)
    p = fxgrow.plan(a, factor=1.5)
    reference = fxgrow.widen(m, x, factor=1.5)

    def no_analysis(*args, **kwargs):
        raise AssertionError("analysed again")

    monkeypatch.setattr(api, "analyze", no_analysis)
    monkeypatch.setattr(api, "on_graph", no_analysis)
    monkeypatch.setattr(dependency, "run", no_analysis)
    with pytest.raises(AssertionError, match="analysed again"):  # the patch does bite
        fxgrow.widen(m, x, factor=1.5)
    for student in (fxgrow.widen(p), fxgrow.widen(m, x, plan=p), fxgrow.widen(a, factor=1.5)):
        assert_same_student(reference, student, x)
        assert fxgrow.growth_record(student).error.max_rel <= 1e-5  # verified against the teacher


def test_a_plan_for_another_architecture_is_refused_naming_it(r18):
    m, x = r18
    other = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU(), nn.Conv2d(5, 2, 1)).eval()
    p_other = fxgrow.plan(other, x, factor=2)
    a = fxgrow.analyze(m, x)
    pattern = (
        r"the plan names group '0', which this model does not have \(the plan was made for "
        r"another model, a Sequential, not this ResNet\)"
    )
    with teacher_unchanged(m):
        with pytest.raises(InputError, match=pattern):
            fxgrow.widen(m, x, plan=p_other)
        with pytest.raises(InputError, match=pattern):
            fxgrow.widen(a, plan=p_other)


def test_a_plan_for_another_resnet_is_checked_and_grows_this_one(r18):
    """A plan is a description by group names: on another model of the same architecture it
    is checked against that model's own analysis, and the student is of that model."""
    m, x = r18
    m2 = resnet(seed=5)
    p = fxgrow.plan(m, x, factor=2)
    student = fxgrow.widen(m2, x, plan=p)
    assert_same_student(fxgrow.widen(m2, x, factor=2), student, x)
    assert fxgrow.compare(m2, student, x).max_rel <= 1e-5
    assert fxgrow.compare(m, student, x).max_rel > 1e-2  # not m's student


def test_what_widen_cannot_take_is_refused_saying_what_to_do(r18):
    m, x = r18
    a = fxgrow.analyze(m, x)
    p = fxgrow.plan(a, factor=2)
    cases = [
        (lambda: fxgrow.widen(WidenPlan.from_json(p.to_json())), "holds no analysis"),
        (lambda: fxgrow.widen(m, factor=2), r"needs example inputs"),
        (lambda: fxgrow.widen(p, factor=2), "not both: the plan fixes the widths"),
        (lambda: fxgrow.widen(m, x, plan=p, factor=2), "not both"),
        (lambda: fxgrow.widen(p, plan=p), "give the plan once"),
        (lambda: fxgrow.widen(a), r"give widths=\{group or module: new width\} or factor="),
        (lambda: fxgrow.widen(a, x[:1], factor=2), "differ from those the analysis was made"),
        (
            lambda: fxgrow.widen(a, factor=2, outputs="grow"),
            r"outputs= decide how a model is analysed, and this analysis was made with "
            r"outputs='fixed': pass them to fxgrow.analyze",
        ),
        (lambda: fxgrow.widen(m, x, plan=p.to_dict()), "plan= must be a WidenPlan"),
        (
            lambda: fxgrow.widen(fxgrow.analyze(m, x, within="layer1"), factor=2),
            r"within='layer1' grows a submodule inside the whole model: pass the whole model",
        ),
    ]
    with teacher_unchanged(m):
        for call, message in cases:
            with pytest.raises(InputError, match=message):
                call()


def test_within_reuses_the_plan_of_the_submodule(r18, monkeypatch):
    import fxgrow.api as api

    m, x = r18
    p = fxgrow.plan(m, x, within="layer2", factor=2)
    reference = fxgrow.widen(m, x, within="layer2", factor=2)
    calls = []
    analyze = api.analyze
    monkeypatch.setattr(api, "analyze", lambda *a, **k: calls.append(1) or analyze(*a, **k))
    student = fxgrow.widen(m, x, within="layer2", plan=p)
    assert calls == []  # the submodule's analysis came with the plan
    assert type(student) is type(m)
    assert_same_student(reference, student, x)


def test_hugging_face_plan_gives_the_model_class():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (1, 6))
    widths = {"model.layers.0.mlp.up_proj": 128}
    reference = fxgrow.widen(model, ids, widths=widths)
    student = fxgrow.widen(fxgrow.plan(model, ids, widths=widths))
    assert type(student) is transformers.LlamaForCausalLM
    assert student.config.intermediate_size == 128
    assert_same_student(reference, student, ids)


def test_cli_widen_runs_the_library_pipeline_once(monkeypatch, capsys):
    """The command line analyses once and rewrites through fxgrow.widen with the plan it
    printed (no copy of the pipeline), and verifies with the library's verifier."""
    import fxgrow.api as api
    import fxgrow.verify.verdict as verdict
    from fxgrow.cli import main

    calls: dict[str, int] = {"analyze": 0, "apply": 0, "judge": 0}

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(api, "analyze", counted("analyze", api.analyze))
    monkeypatch.setattr(api, "apply", counted("apply", api.apply))
    monkeypatch.setattr(verdict, "judge", counted("judge", verdict.judge))
    spec = ["torchvision:resnet18", "--input-shape", "1,3,32,32", "--factor", "1.5"]
    assert main(["widen", *spec, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == {"analyze": 1, "apply": 1, "judge": 1}
    assert len(report["groups_changed"]) == 12 and report["preservation"]["ok"]
    assert report["parameters"]["after"] == 25_901_896
    calls.update(analyze=0, apply=0, judge=0)
    assert main(["widen", *spec, "--plan-only", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["changes"]) == 12
    assert calls == {"analyze": 1, "apply": 0, "judge": 0}


def test_judge_is_the_verifiers_decision_without_raising(r18):
    from fxgrow.verify.verdict import judge

    m, x = r18
    student = fxgrow.widen(m, x, factor=2)
    good = judge(m, student, x)
    assert good.ok and good.error is None and good.tolerance == 1e-5
    assert good.result.max_rel <= 1e-5
    with torch.no_grad():
        student.fc.bias += 1.0  # a wrong student: every logit moved by 1
    bad = judge(m, student, x)
    assert not bad.ok and bad.result.max_rel > 1e-2
    assert isinstance(bad.error, fxgrow.PreservationError)
    with pytest.raises(fxgrow.PreservationError) as e:
        fxgrow.verify.verify(m, student, x)
    assert str(e.value) == str(bad.error)
    measured = judge(m, student, x, exact=False)  # inexact by design: measured, no error
    assert not measured.ok and measured.error is None
    assert measured.result.max_rel == bad.result.max_rel


def test_cli_refuses_a_wrong_student_unless_no_verify(monkeypatch, capsys):
    """A bug planted in the library's rewrite: the CLI's verification (the library's
    verifier) refuses the student, and --no-verify reports it NOT OK and exits 0."""
    import fxgrow.api as api
    from fxgrow.cli import main

    apply = api.apply

    def wrong(*args, **kwargs):
        student = apply(*args, **kwargs)
        with torch.no_grad():
            student.fc.bias += 1.0
        return student

    monkeypatch.setattr(api, "apply", wrong)
    spec = ["torchvision:resnet18", "--input-shape", "1,3,32,32", "--factor", "1.5", "-q"]
    assert main(["widen", *spec]) == 1
    err = capsys.readouterr().err
    assert "fxgrow: error: the student does not compute the teacher's function" in err
    assert "--no-verify writes the student anyway" in err
    assert main(["widen", *spec, "--no-verify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preservation"]["ok"] is False and report["preservation"]["max_rel"] > 1e-2
    assert report["preservation"]["tolerance"] == 1e-5


class _TwoInputs(torch.nn.Module):
    """A forward taking a list of tensors (one positional input holding two)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.b(torch.relu(self.a(xs[0] + xs[1])))


def test_inputs_holding_tensors_compared_leaf_by_leaf():
    """widen(plan, inputs) compares nested example inputs tensor by tensor: equal copies are
    the same inputs, other values a clear refusal (a raw RuntimeError before)."""
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    xs = [torch.randn(2, 4), torch.randn(2, 4)]
    plan = fxgrow.plan(model, (xs,), factor=2)
    student = fxgrow.widen(model, ([t.clone() for t in xs],), plan=plan)
    assert student.get_submodule("a").out_features == 12
    with torch.no_grad():
        torch.testing.assert_close(student(xs), model(xs))
    with pytest.raises(fxgrow.InputError):
        fxgrow.widen(fxgrow.analyze(model, (xs,)), ([xs[0] + 1, xs[1]],), factor=2)
