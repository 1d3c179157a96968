"""Optimizers, schedules and freezing after growth (issue 15, items 2 and 3).

* ``transfer_optimizer`` through accelerate's ``AcceleratedOptimizer`` (re-wrapped), with param
  groups of different hyper-parameters (new parameters join their template's group) and frozen
  parameters (kept out, still frozen in the student).
* ``transfer_scheduler``: "continue" sets exactly the learning rates the old scheduler would
  have; "warmup" ramps them; "restart" replays the schedule from its start; "lemon" replays it
  ``speed`` times faster.
* ``trainable=``: "new_blocks" trains only inserted blocks, "new_units" only new positions;
  frozen values do not move under AdamW (weight decay included).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from fxgrow.training import transfer_scheduler

X = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        return x + self.fc2(F.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.blocks(F.relu(self.embed(x))))


def trained(make_opt, steps: int = 2):
    torch.manual_seed(0)
    model = Net()
    opt = make_opt(model)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), Y).backward()
        opt.step()
    return model, opt


def grouped(model: Net) -> torch.optim.Optimizer:
    model.embed.requires_grad_(False)  # frozen: not in the optimizer
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 0.1, "lr": 1e-3},
            {"params": rest, "weight_decay": 0.0, "lr": 2e-3},
        ]
    )


def test_param_groups_and_frozen_parameters():
    teacher, opt = trained(grouped)
    student, s_opt = fxgrow.grow_during_training(teacher, opt, X, width=2, blocks={"blocks": 3})
    names = {id(p): n for n, p in student.named_parameters()}
    decay, rest = s_opt.param_groups
    assert (decay["weight_decay"], decay["lr"], rest["weight_decay"], rest["lr"]) == (
        0.1,
        1e-3,
        0.0,
        2e-3,
    )
    assert {names[id(p)] for p in decay["params"]} == {
        f"blocks.{i}.fc{j}.weight" for i in range(3) for j in (1, 2)
    } | {"head.weight"}
    assert {names[id(p)] for p in rest["params"]} == {
        f"blocks.{i}.fc{j}.bias" for i in range(3) for j in (1, 2)
    } | {"head.bias"}
    assert not student.get_parameter("embed.weight").requires_grad
    assert student.get_parameter("embed.weight").shape == (32, 8)
    for g in s_opt.param_groups:
        for p in g["params"]:
            if not names[id(p)].startswith("blocks.2"):
                assert s_opt.state[p]["exp_avg"].shape == p.shape
            else:
                assert not s_opt.state.get(p)


def test_accelerated_optimizer():
    accelerate = pytest.importorskip("accelerate")
    acc = accelerate.Accelerator(cpu=True)
    torch.manual_seed(0)
    model = Net()
    model, opt = acc.prepare(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    F.cross_entropy(model(X), Y).backward()
    opt.step()
    assert type(opt).__name__ == "AcceleratedOptimizer"
    student = fxgrow.grow(model, X, width=2, split="random")
    new = fxgrow.transfer_optimizer(opt, model, student)
    assert type(new).__name__ == "AcceleratedOptimizer" and type(new.optimizer) is torch.optim.Adam
    for p in student.parameters():
        assert new.state[p]["exp_avg_sq"].shape == p.shape
    with pytest.raises(fxgrow.InputError, match="takes one optimizer, got a list"):
        fxgrow.transfer_optimizer([opt], model, student)
    # accelerate's scheduler wrapper: carried on around the new wrapped optimizer
    sched = acc.prepare(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    opt.step()
    sched.step()
    new = fxgrow.transfer_optimizer(opt, model, student)
    carried = transfer_scheduler(sched, new)
    assert type(carried).__name__ == "AcceleratedScheduler" and carried.optimizers == [new]
    assert carried.scheduler.optimizer is new and new.param_groups[0]["lr"] == 5e-4
    new.step()
    carried.step()
    assert new.param_groups[0]["lr"] == pytest.approx(2.5e-4)


SCHEDULES = {
    "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (1 + s)),
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20),
    "sequential": lambda o: torch.optim.lr_scheduler.SequentialLR(
        o,
        [
            torch.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=3),
            torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
        ],
        milestones=[3],
    ),
}


def lrs(opt, sched, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_schedules(kind):
    make = SCHEDULES[kind]
    teacher, opt = trained(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), 0)
    sched = make(opt)
    lrs(opt, sched, 4)  # 4 steps into the schedule
    ref_opt = torch.optim.SGD(Net().parameters(), lr=0.1)
    ref = make(ref_opt)
    first = ref_opt.param_groups[0]["lr"]  # the schedule's rate before its first step
    start = lrs(ref_opt, ref, 12)  # the schedule from its start
    ahead = copy.deepcopy((opt, sched))  # where the old one would go
    expected = lrs(*ahead, 8)
    student = fxgrow.grow(teacher, X, width=2)

    new_opt = fxgrow.transfer_optimizer(opt, teacher, student)
    cont = transfer_scheduler(sched, new_opt, mode="continue")
    assert new_opt.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert lrs(new_opt, cont, 8) == pytest.approx(expected)

    new_opt = fxgrow.transfer_optimizer(opt, teacher, student)
    warm = transfer_scheduler(sched, new_opt, mode="warmup", warmup_steps=4)
    got = lrs(new_opt, warm, 8)
    ramp = [min(1.0, (i + 2) / 4) for i in range(8)]
    assert got == pytest.approx([e * r for e, r in zip(expected, ramp)])

    new_opt = fxgrow.transfer_optimizer(opt, teacher, student)
    again = transfer_scheduler(sched, new_opt, mode="restart")
    assert new_opt.param_groups[0]["lr"] == pytest.approx(first)
    assert lrs(new_opt, again, 8) == pytest.approx(start[:8])

    new_opt = fxgrow.transfer_optimizer(opt, teacher, student)
    lemon = transfer_scheduler(sched, new_opt, mode="lemon", speed=2)
    assert new_opt.param_groups[0]["lr"] == pytest.approx(first)  # the start (peak) again
    assert lrs(new_opt, lemon, 6) == pytest.approx(start[1:12:2])


def test_schedule_bad_options():
    teacher, opt = trained(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), 0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    with pytest.raises(fxgrow.InputError, match="schedule mode must be one of"):
        transfer_scheduler(sched, opt, mode="linear")
    with pytest.raises(fxgrow.InputError, match="needs warmup_steps >= 1"):
        transfer_scheduler(sched, opt, mode="warmup")
    two = torch.optim.SGD(
        [{"params": [teacher.head.weight]}, {"params": [teacher.head.bias]}], lr=0.1
    )
    with pytest.raises(fxgrow.InputError, match="drives 1 param groups, the new optimizer has 2"):
        transfer_scheduler(sched, two)


def steps(model, opt, n: int = 3) -> None:
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(model(X), Y).backward()
        opt.step()


def test_freeze_new_blocks():
    teacher, opt = trained(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1))
    student, s_opt = fxgrow.grow_during_training(
        teacher, opt, X, blocks={"blocks": 4}, trainable="new_blocks"
    )
    held = {
        n
        for n, p in student.named_parameters()
        if any(p is q for g in s_opt.param_groups for q in g["params"])
    }
    assert held == {
        f"blocks.{i}.fc{j}.{k}" for i in (2, 3) for j in (1, 2) for k in ("weight", "bias")
    }
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    steps(student, s_opt)
    for n, p in student.named_parameters():
        assert torch.equal(p, before[n]) == (n not in held), n


def test_freeze_new_units():
    teacher, opt = trained(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1))
    student, s_opt = fxgrow.grow_during_training(teacher, opt, X, width=2, trainable="new_units")
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    steps(student, s_opt)
    old = dict(teacher.named_parameters())
    moved = 0
    for n, p in student.named_parameters():
        t = old[n]
        corner = tuple(slice(0, s) for s in t.shape)
        assert torch.equal(p[corner], before[n][corner]), f"{n}: a teacher position moved"
        if p.shape != t.shape:
            assert not torch.equal(p, before[n]), f"{n}: new positions did not train"
            moved += 1
    assert moved >= 6
    assert not student.get_parameter("head.bias").requires_grad  # not widened: frozen


def test_freeze_bad_options():
    teacher, opt = trained(lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    with pytest.raises(fxgrow.InputError, match="trainable must be one of"):
        fxgrow.grow_during_training(teacher, opt, X, width=2, trainable="old")
    with pytest.raises(fxgrow.InputError, match="leaves nothing to train"):
        fxgrow.grow_during_training(teacher, opt, X, width=2, trainable="new_blocks")


EVERY = {
    "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, nesterov=True),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-3, amsgrad=True),
    "nadam": lambda ps: torch.optim.NAdam(ps, lr=1e-3),
    "radam": lambda ps: torch.optim.RAdam(ps, lr=1e-3),
    "adamax": lambda ps: torch.optim.Adamax(ps, lr=1e-3),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, centered=True),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2),
    "adadelta": lambda ps: torch.optim.Adadelta(ps),
    "asgd": lambda ps: torch.optim.ASGD(ps, lr=1e-2, t0=0),
    "rprop": lambda ps: torch.optim.Rprop(ps, lr=1e-3),
}


@pytest.mark.parametrize("name", list(EVERY))
def test_every_torch_optimizer(name):
    """Every torch.optim optimizer with per-parameter state: student-shaped state, the same
    loss at growth, and training goes on."""
    teacher, opt = trained(lambda m: EVERY[name](m.parameters()))
    student = fxgrow.grow(teacher, X, width=2, split="random")
    new = fxgrow.transfer_optimizer(opt, teacher, student)
    assert type(new) is type(opt)
    for p in student.parameters():
        for key, value in new.state[p].items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                assert value.shape == p.shape, (name, key)
    assert float(F.cross_entropy(student(X), Y)) == pytest.approx(
        float(F.cross_entropy(teacher(X), Y)), rel=1e-5
    )
    steps(student, new, 2)


def test_factored_state_refused():
    if not hasattr(torch.optim, "Adafactor"):
        pytest.skip("torch.optim.Adafactor is not in this torch")
    teacher, opt = trained(lambda m: torch.optim.Adafactor(m.parameters(), lr=1e-2))
    student = fxgrow.grow(teacher, X, width=2)
    with pytest.raises(
        fxgrow.InputError,
        match=r"optimizer state 'row_var' of .* has shape "
        r".*factored or flattened state",
    ):
        fxgrow.transfer_optimizer(opt, teacher, student)
