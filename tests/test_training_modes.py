"""Growth from a model in training mode (issue 15, item 1).

* Hugging Face GPT-2, BERT and OPT (torch.export front end) grown in training mode: no false
  PreservationError (verification compares in eval mode), the student's dropout follows
  ``.train()`` / ``.eval()`` (active and resampled in training mode, off in eval mode, where it
  equals the teacher), and with the same dropout seed the training-mode loss right after growth
  equals the loss right before: dropout sites that keep their shape draw the teacher's masks,
  widened ones draw them at the teacher's shape and copy them to the replicas (tied).
* A timm ResNet with dropout and BatchNorm (fx front end) grown in training mode: the same
  loss with the same seed, BatchNorm running statistics and momentum carried (mapped onto the
  widened channels) and updated alike by the next training step.
* save -> load -> transfer_optimizer: the expansion record survives, state is student-shaped.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
import transformers

import fxgrow
from fxgrow.training.tied import TiedAttention, TiedDropout

IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 10, (4,), generator=torch.Generator().manual_seed(2))


pytestmark = pytest.mark.usefixtures("one_thread")  # small models (conftest.py)


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=64,
        vocab_size=64,
        n_positions=32,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg).train()


def bert() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=64,
        max_position_embeddings=32,
    )
    return transformers.BertForMaskedLM(cfg).train()


def opt_lm() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.OPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        vocab_size=64,
        max_position_embeddings=32,
        word_embed_proj_dim=32,
        use_cache=False,
    )
    return transformers.OPTForCausalLM(cfg).train()


MODELS = {
    "gpt2": (gpt2, "transformer.h.0.mlp.c_fc"),
    "bert": (bert, "bert.encoder.layer.0.intermediate.dense"),
}
# (nn.Dropout sites, attention rates) of the tiny configs; OPT's attention dropout is 0
DROPOUTS = {"gpt2": (5, 2), "bert": (5, 2), "opt": (4, 0)}


def logits(out) -> torch.Tensor:
    return out["logits"] if isinstance(out, dict) else out.logits


def lm_loss(out) -> torch.Tensor:
    z = logits(out)
    return F.cross_entropy(z[:, :-1].reshape(-1, z.shape[-1]), IDS[:, 1:].reshape(-1))


def seeded(model, inputs, seed: int = 7):
    torch.manual_seed(seed)
    return model(inputs)


@pytest.mark.parametrize("name", list(DROPOUTS))
def test_hf_grown_in_train_mode_hidden_width(name):
    """Hidden size doubled in training mode: no false alarm, dropout mode-aware and tied (the
    same seed gives the same training-mode loss), exact in eval mode."""
    teacher = {"gpt2": gpt2, "bert": bert, "opt": opt_lm}[name]()
    opt = torch.optim.AdamW(teacher.parameters(), lr=1e-3)
    lm_loss(teacher(IDS)).backward()
    opt.step()
    with torch.no_grad():
        before = float(lm_loss(seeded(teacher, IDS)))
    student, _ = fxgrow.grow_during_training(teacher, opt, IDS, width=2)  # verify=True
    assert teacher.training and student.training
    assert fxgrow.growth_record(student).captured_training is True
    assert not [m for m in student.modules() if type(m) is torch.nn.Dropout]  # all widened
    drops = [m for m in student.modules() if isinstance(m, TiedDropout)]
    attention = [m for m in student.modules() if isinstance(m, TiedAttention)]
    assert len(drops) == DROPOUTS[name][0] and all(d.p == pytest.approx(0.1) for d in drops)
    assert len(attention) == DROPOUTS[name][1]
    assert all(a.p == pytest.approx(0.1) and a.axes[0][:2] == [1, 4] for a in attention)
    with torch.no_grad():  # training mode: the teacher's masks under the teacher's seed ...
        assert float(lm_loss(seeded(student, IDS))) == pytest.approx(before, rel=1e-5)
        a, b = logits(student(IDS)), logits(student(IDS))
    assert not torch.equal(a, b)  # ... and resampled on every call
    student.eval()  # plain .eval() works on the export student
    teacher.eval()
    assert not any(m.training for m in student.modules())
    with torch.no_grad():
        a, b, t = logits(student(IDS)), logits(student(IDS)), logits(teacher(IDS))
    assert torch.equal(a, b)
    assert float((a - t).abs().max()) <= 1e-5 * float(t.abs().max())
    # independent masks when asked: the same loss only in eval mode
    teacher.train()
    student, _ = fxgrow.grow_during_training(teacher, opt, IDS, width=2, dropout="independent")
    assert len([m for m in student.modules() if type(m) is torch.nn.Dropout]) == DROPOUTS[name][0]
    with torch.no_grad():
        assert float(lm_loss(seeded(student, IDS))) != pytest.approx(before, rel=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_hf_same_dropout_seed_same_loss(name):
    """MLP width grown in training mode with dropout on: every dropout site keeps its shape,
    so with the same seed the student draws the teacher's masks and the loss right after growth
    equals the loss right before; then training goes on with resampled masks."""
    make, mlp = MODELS[name]
    teacher = make()
    opt = torch.optim.SGD(teacher.parameters(), lr=0.01, momentum=0.9)
    lm_loss(teacher(IDS)).backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        before = float(lm_loss(seeded(teacher, IDS)))
        again = float(lm_loss(seeded(teacher, IDS, seed=8)))
    assert before != again  # dropout is on
    student, s_opt = fxgrow.grow_during_training(teacher, opt, IDS, width={mlp: 128})
    assert student.get_parameter(
        mlp.replace("c_fc", "c_proj") + ".weight" if "c_fc" in mlp else mlp + ".weight"
    ).shape[:2] in ((128, 32), (32, 128))
    loss = lm_loss(seeded(student, IDS))
    assert float(loss.detach()) == pytest.approx(before, rel=1e-5)
    loss.backward()
    s_opt.step()
    with torch.no_grad():
        assert float(lm_loss(seeded(student, IDS))) != pytest.approx(before, rel=1e-6)


def test_timm_dropout_and_batchnorm_carried():
    torch.manual_seed(0)
    teacher = timm.create_model("resnet18", num_classes=10, drop_rate=0.5).train()
    teacher.bn1.momentum = 0.3  # a non-default momentum must be carried
    opt = torch.optim.SGD(teacher.parameters(), lr=0.01, momentum=0.9)
    F.cross_entropy(teacher(X), Y).backward()  # one step: running stats are not the defaults
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        before = float(F.cross_entropy(seeded(copy.deepcopy(teacher), X), Y))
        other = float(F.cross_entropy(seeded(copy.deepcopy(teacher), X, seed=8), Y))
    assert before != other  # dropout (p=0.5 before the classifier) is on
    student, _ = fxgrow.grow_during_training(
        teacher, opt, X, width={"layer1.0.conv1": 96}, blocks={"layer2": 3}
    )
    assert student.training and student.get_parameter("layer1.0.conv1.weight").shape[0] == 96
    bn_t, bn_s = teacher.get_submodule("layer1.0.bn1"), student.get_submodule("layer1.0.bn1")
    assert bn_s.momentum == bn_t.momentum and student.get_submodule("bn1").momentum == 0.3
    index = fxgrow.growth_record(student).expansions["layer1.0.bn1.weight"][0][1]
    for buf in ("running_mean", "running_var"):
        assert torch.equal(getattr(bn_s, buf), getattr(bn_t, buf)[index])
    assert int(bn_s.num_batches_tracked) == int(bn_t.num_batches_tracked)
    loss = F.cross_entropy(seeded(student, X), Y)  # the same masks, batch statistics alike
    assert float(loss.detach()) == pytest.approx(before, rel=1e-5)
    with torch.no_grad():  # that forward pass updated the running statistics like the teacher's
        F.cross_entropy(seeded(teacher, X), Y)
    for buf in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(bn_s, buf), getattr(bn_t, buf)[index])
    student.eval()
    teacher.eval()
    with torch.no_grad():
        torch.testing.assert_close(student(X), teacher(X), rtol=1e-5, atol=1e-5)


def test_save_load_transfer_optimizer(tmp_path):
    torch.manual_seed(0)
    teacher = timm.create_model("resnet18", num_classes=10).train()
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    F.cross_entropy(teacher(X), Y).backward()
    opt.step()
    student = fxgrow.grow(teacher, X, width=1.5, split="random")
    path = fxgrow.save(student, tmp_path / "s.safetensors", example_inputs=(X,))
    loaded = fxgrow.load(path)
    want, got = fxgrow.growth_record(student).expansions, fxgrow.growth_record(loaded).expansions
    assert set(want) == set(got) and want
    for name in want:
        for (a1, i1, f1, c1), (a2, i2, f2, c2) in zip(want[name], got[name]):
            assert (a1, c1) == (a2, c2) and torch.equal(i1, i2) and torch.equal(f1, f2)
            assert f1.dtype == f2.dtype
    direct = fxgrow.transfer_optimizer(opt, teacher, student)
    s_opt = fxgrow.transfer_optimizer(opt, teacher, loaded)
    params = dict(loaded.named_parameters())
    ref = {n: direct.state[p] for n, p in student.named_parameters()}
    widened = 0
    for name, p in params.items():
        state = s_opt.state[p]
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].shape == p.shape, (name, key)
            assert torch.equal(state[key], ref[name][key])
        widened += p.shape != teacher.get_parameter(name).shape
    assert widened > 10


def test_hf_tied_dropout_grown_again_and_saved(tmp_path):
    """A tied student grown again (wider, one block deeper) still draws the first teacher's
    masks: three generations, one training-mode loss under one seed; saved and loaded, too."""
    teacher = gpt2()
    opt = torch.optim.AdamW(teacher.parameters(), lr=1e-3)

    def loss(model) -> float:
        with torch.no_grad():
            return float(lm_loss(seeded(model, IDS)))

    first = loss(teacher)
    s1, o1 = fxgrow.grow_during_training(teacher, opt, IDS, width=2)
    s2, o2 = fxgrow.grow_during_training(s1, o1, IDS, width=2, blocks={"transformer.h": 3})
    assert s2.get_parameter("transformer.wte.weight").shape == (64, 128)
    assert loss(s1) == pytest.approx(first, rel=1e-5)
    assert loss(s2) == pytest.approx(first, rel=1e-5)
    tied = [m for m in s2.modules() if isinstance(m, TiedDropout)]
    assert tied and all(
        m.axes[0][1] == 32 and len(m.axes[0][2]) == 128 for m in tied if m.axes[0][0] == 2
    )
    assert all(len(g["params"]) for g in o2.param_groups)
    path = fxgrow.save(s2, tmp_path / "s2.safetensors", example_inputs=(IDS,))
    loaded = fxgrow.load(path)
    loaded.train()
    assert loss(loaded) == pytest.approx(first, rel=1e-5)


def test_torchvision_stochastic_depth_follows_the_mode():
    """EfficientNet's stochastic depth (``torchvision.ops.stochastic_depth(..., training=
    self.training)``, baked by fx tracing) reads the student's flag: grown in training mode
    without a false alarm (0.0045 before), exact in eval mode, random in training mode."""
    torchvision = pytest.importorskip("torchvision")
    from fxgrow.frontend.modal import TrainingFlag

    torch.manual_seed(0)
    teacher = torchvision.models.efficientnet_b0(num_classes=10).train()
    student = fxgrow.grow(teacher, X[:2], width={"features.1.0.block.0.0": 48})  # verify=True
    flags = [m for m in student.modules() if isinstance(m, TrainingFlag)]
    assert len(flags) == 9 and all(f.training for f in flags)  # the residual MBConv blocks
    student.eval()
    teacher.eval()
    with torch.no_grad():
        torch.testing.assert_close(student(X[:2]), teacher(X[:2]), rtol=1e-5, atol=1e-6)
    student.train()
    for m in student.modules():  # the classifier's dropout off: only stochastic depth is random
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    with torch.no_grad():
        assert not torch.equal(student(X[:2]), student(X[:2]))


def test_exported_batchnorm_follows_the_mode():
    """torch.export bakes batch norm's ``training`` (a constant of ``aten.batch_norm``): a
    torchvision ResNet captured by export in training mode reads the student's flag instead,
    so it is verified exactly in eval mode (a PreservationError of 0.93 before) and uses batch
    statistics in training mode, where it equals the teacher too."""
    torchvision = pytest.importorskip("torchvision")
    from fxgrow.frontend.modal import TrainingFlag

    torch.manual_seed(0)
    teacher = torchvision.models.resnet18(num_classes=10).train()
    student = fxgrow.widen(teacher, X, factor=1.5, frontend="export")  # verify=True
    flags = [m for m in student.modules() if isinstance(m, TrainingFlag)]
    assert len(flags) == 20 and all(f.training for f in flags)  # one per BatchNorm2d
    assert fxgrow.growth_record(student).error.max_rel < 1e-5
    reference, grown = copy.deepcopy(teacher), copy.deepcopy(student)
    with torch.no_grad():
        torch.testing.assert_close(grown(X), reference(X), rtol=1e-4, atol=1e-5)  # batch stats
    student.eval()
    teacher.eval()
    assert not any(f.training for f in flags)
    with torch.no_grad():
        torch.testing.assert_close(student(X), teacher(X), rtol=1e-4, atol=1e-5)
        student.train()
        assert not torch.allclose(student(X), student.eval()(X), atol=1e-3)
