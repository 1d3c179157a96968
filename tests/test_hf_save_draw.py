"""``fxgrow.save`` / ``fxgrow.load`` / ``fxgrow.draw`` with a student of the teacher's own
Hugging Face class: saved as a Hugging Face folder with the growth record beside it, loaded
back as the class with the record (so ``transfer_optimizer`` maps the optimizer state), and
drawn beside the teacher."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T

import fxgrow
from fxgrow.hf import fresh_inputs


def llama():
    torch.manual_seed(0)
    return T.LlamaForCausalLM(
        T.LlamaConfig(
            vocab_size=100,
            num_hidden_layers=2,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()


def test_save_load_hf_student_keeps_class_tensors_and_growth_record(tmp_path):
    teacher = llama()
    ids = fresh_inputs(teacher.config, 2, 8)["input_ids"]
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    teacher(ids, labels=ids).loss.backward()
    opt.step()
    student = fxgrow.widen(teacher, ids, factor=2)
    assert type(student) is T.LlamaForCausalLM and fxgrow.growth_record(student).expansions
    out = fxgrow.save(student, tmp_path / "grown", example_inputs=ids, teacher=teacher)
    assert (out / "config.json").is_file() and (out / "fxgrow_growth.json").is_file()
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 128
    assert T.AutoModelForCausalLM.from_pretrained(out).config.hidden_size == 128
    loaded = fxgrow.load(out)
    assert type(loaded) is T.LlamaForCausalLM
    sd, sd2 = student.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    rec, rec2 = fxgrow.growth_record(student).expansions, fxgrow.growth_record(loaded).expansions
    assert rec.keys() == rec2.keys()
    for k in rec:
        for (a, i, f, c), (a2, i2, f2, c2) in zip(rec[k], rec2[k]):
            assert (a, c) == (a2, c2) and torch.equal(i, i2) and torch.equal(f, f2)
    new = fxgrow.transfer_optimizer(opt, teacher, loaded)
    ref = fxgrow.transfer_optimizer(opt, teacher, student)
    by_name = dict(loaded.named_parameters())
    q = by_name["model.layers.0.self_attn.q_proj.weight"]
    assert tuple(new.state[q]["exp_avg"].shape) == (128, 128)
    q_ref = dict(student.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(new.state[q]["exp_avg_sq"], ref.state[q_ref]["exp_avg_sq"])
    with pytest.raises(fxgrow.InputError, match="writes it as a folder"):
        fxgrow.save(student, tmp_path / "grown.safetensors")


def test_draw_teacher_with_hf_student(tmp_path):
    teacher = llama()
    ids = fresh_inputs(teacher.config, 2, 8)["input_ids"]
    student = fxgrow.grow(
        teacher, ids, to_config={"intermediate_size": 256, "num_hidden_layers": 3}
    )
    assert type(student) is T.LlamaForCausalLM
    dot = fxgrow.draw(teacher, ids, student=student)
    assert "teacher → student" in dot and "parameters" in dot
    page = tmp_path / "x.html"
    fxgrow.draw(teacher, ids, page, student=student)
    html = page.read_text()
    assert "student" in html and "128 → 256" in html
    with pytest.raises(fxgrow.InputError, match="student= must be"):
        fxgrow.draw(teacher, ids, student=torch.nn.Linear(2, 2))
