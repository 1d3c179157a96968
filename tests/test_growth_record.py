"""The growth record (``fxgrow.growth``): one typed record per student, saved whole by
``fxgrow.save`` and given back by ``fxgrow.load`` -- so optimizer state moved onto a loaded
student is exactly what the in-memory student gets."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision

import fxgrow
from fxgrow.growth import AxisExpansion, GrowthRecord, set_growth_record, update_growth_record
from fxgrow.io.growth_codec import decode, encode

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 3, 7, 9])


def assert_same_record(a: GrowthRecord, b: GrowthRecord, *, weights: bool = True) -> None:
    """Field by field, tensors bit for bit (dtype included)."""
    assert a.expansions.keys() == b.expansions.keys()
    for name in a.expansions:
        assert len(a.expansions[name]) == len(b.expansions[name])
        for x, y in zip(a.expansions[name], b.expansions[name]):
            assert isinstance(y, AxisExpansion)
            assert (x.axis, x.consumed) == (y.axis, y.consumed)
            assert torch.equal(x.source, y.source) and x.source.dtype == y.source.dtype
            assert torch.equal(x.fraction, y.fraction) and x.fraction.dtype == y.fraction.dtype
    if a.output_positions is None:
        assert b.output_positions is None
    else:
        assert len(a.output_positions) == len(b.output_positions)
        for pa, pb in zip(a.output_positions, b.output_positions):
            assert [p is None for p in pa] == [p is None for p in pb]
            assert all(torch.equal(p, q) for p, q in zip(pa, pb) if p is not None)
    skip = {"expansions", "output_positions"} | ({"weights"} if not weights else set())
    for f in dataclasses.fields(GrowthRecord):
        if f.name not in skip:
            assert getattr(a, f.name) == getattr(b, f.name), f.name


@pytest.fixture(scope="module")
def trained():
    """A resnet18 teacher after one AdamW step (the optimizer has state), and its student."""
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18(weights=None, num_classes=10).train()
    opt = torch.optim.AdamW(teacher.parameters(), lr=1e-3, weight_decay=0.05)
    F.cross_entropy(teacher(X), Y).backward()
    opt.step()
    opt.zero_grad()
    student = fxgrow.widen(teacher, X, factor=1.5, split="random", seed=3)
    return teacher, opt, student


def test_loaded_student_gets_the_same_optimizer_state(trained, tmp_path):
    teacher, opt, student = trained
    path = fxgrow.save(student, tmp_path / "s.safetensors", example_inputs=(X,))
    loaded = fxgrow.load(path)
    assert loaded is not student
    assert_same_record(fxgrow.growth_record(student), fxgrow.growth_record(loaded))

    ref = fxgrow.transfer_optimizer(opt, teacher, student)
    new = fxgrow.transfer_optimizer(opt, teacher, loaded)
    teacher_params = dict(teacher.named_parameters())
    ref_params, new_params = dict(student.named_parameters()), dict(loaded.named_parameters())
    assert ref_params.keys() == new_params.keys()
    grown = 0
    for name, p in new_params.items():
        q = ref_params[name]
        s_new, s_ref = new.state[p], ref.state[q]
        assert s_new.keys() == s_ref.keys() == {"step", "exp_avg", "exp_avg_sq"}
        for key in ("exp_avg", "exp_avg_sq"):
            assert s_new[key].shape == p.shape  # student-shaped, not the teacher's
            assert torch.equal(s_new[key], s_ref[key]), (name, key)
        assert torch.equal(s_new["step"], s_ref["step"])
        grown += p.shape != teacher_params[name].shape
    assert grown >= 40  # every conv, bn and the classifier's input grew
    assert new_params["conv1.weight"].shape == (96, 3, 7, 7)

    # one step on the same loss moves both students identically
    for model, optimizer in ((student, ref), (loaded, new)):
        model.train()
        F.cross_entropy(model(X), Y).backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, p in new_params.items():
        assert torch.equal(p, ref_params[name]), name


def test_record_is_saved_whole(trained, tmp_path):
    _, _, student = trained
    base = fxgrow.growth_record(student)
    assert base is not None and base.error is not None and base.error.max_rel < 1e-5
    assert base.group_widths is not None and base.group_widths["conv1"] == 96
    record = dataclasses.replace(
        base,
        captured_training=True,
        layer_sources=(0, 1, 1),
        renumbered=True,
        inexact=True,
        gradmax=0.25,
        trainable="new_units",
        config_fields={"hidden_size": 96, "tie_word_embeddings": False},
        fresh_error=3e-7,
    )
    set_growth_record(student, record)
    try:
        loaded = fxgrow.load(fxgrow.save(student, tmp_path / "s.safetensors"))
    finally:
        set_growth_record(student, base)
    assert_same_record(record, fxgrow.growth_record(loaded))
    # without the tensor data: the same record, marked weightless
    light = fxgrow.growth_record(fxgrow.load(tmp_path / "s.safetensors", weights=False))
    assert light.weights is False
    assert_same_record(record, light, weights=False)


def test_grown_outputs_positions_survive_save(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5))
    x = torch.randn(3, 6)
    student = fxgrow.widen(net, x, factor=2, outputs="grow")
    record = fxgrow.growth_record(student)
    assert [tuple(p.shape) for p in record.output_positions[0] if p is not None] == [(5,)]
    loaded = fxgrow.load(fxgrow.save(student, tmp_path / "g.safetensors", example_inputs=(x,)))
    assert_same_record(record, fxgrow.growth_record(loaded))
    assert fxgrow.compare(net, loaded, (x,)).max_rel < 1e-6  # positions: teacher's outputs


def test_record_is_frozen_and_updates_replace_it():
    gm = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))
    assert fxgrow.growth_record(gm) is None
    first = update_growth_record(gm, frontend="fx")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.inexact = True  # type: ignore[misc]
    second = update_growth_record(gm, inexact=True)
    assert first.inexact is False and second.inexact is True and second.frontend == "fx"
    assert fxgrow.growth_record(gm) is second
    with pytest.raises(TypeError, match="GrowthRecord"):
        set_growth_record(gm, {"inexact": True})  # type: ignore[arg-type]


def test_files_without_the_record_and_malformed_records(trained, tmp_path):
    _, _, student = trained
    encoded = json.loads(json.dumps(encode(fxgrow.growth_record(student))))
    # files written before the record kept three keys of their own
    legacy = {
        "fxgrow_frontend": "export",
        "fxgrow_expansions": encoded["expansions"],
    }
    old = decode(legacy, "old.safetensors", legacy=True)
    assert old.frontend == "export" and old.error is None and old.captured_training is None
    want = dataclasses.replace(
        fxgrow.growth_record(student),
        frontend="export",
        error=None,
        captured_training=None,
        group_widths=None,
    )
    assert_same_record(want, old)
    bad = dict(encoded, inexact="yes")
    with pytest.raises(fxgrow.LoadError, match="bad.safetensors: the stored growth record"):
        decode(bad, "bad.safetensors")
    name = next(iter(encoded["expansions"]))
    axes = encoded["expansions"][name]
    broken = dict(encoded, expansions={name: [[axes[0][0], [0.5], [1.0], "float32", True]]})
    with pytest.raises(fxgrow.LoadError, match="malformed expansion"):
        decode(broken, "bad.safetensors")
    with pytest.raises(fxgrow.LoadError, match="unknown Comparison fields"):
        decode(dict(encoded, error={"max_abs": 0.0, "max_rel": 0.0, "code": "x"}), "f")
    # values of the wrong type: a LoadError, never a record that fails later
    for wrong, match in (
        (dict(encoded, error={"max_abs": "a", "max_rel": 0.0}), "Comparison.max_abs is 'a'"),
        (dict(encoded, error={"max_abs": 0.0, "max_rel": True}), "Comparison.max_rel is True"),
        (dict(encoded, error={"max_abs": 0.0, "max_rel": 0.0, "mode": 1}), "Comparison.mode"),
        (dict(encoded, renumbered=None), "renumbered is None, not true or false"),
        (
            dict(encoded, expansions={name: [[axes[0][0], [0], [[1.0]], "float32", True]]}),
            "malformed expansion",
        ),
    ):
        with pytest.raises(fxgrow.LoadError, match=match):
            decode(wrong, "f")
