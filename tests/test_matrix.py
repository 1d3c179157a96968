"""The dtype / mode / device matrix on a few small real models.

Rows: a toy CNN (residual, SE gate, LayerNorm head), torchvision resnet18 and
mobilenet_v3_small at 32x32, a tiny pre-norm transformer (nn.MultiheadAttention, GELU MLP,
dropout); each in float32, float64 and bfloat16, on the CPU and (when present) CUDA, compared
in eval mode and in train mode (batch statistics, dropout off).  For each row:

* the student is on the teacher's device and in its dtype;
* the teacher is never mutated (parameters, buffers, train/eval flags);
* the student is exact up to the dtype: its error against the teacher, and against a float64
  copy of the teacher, is at most ``TOL[dtype]`` or 4x the teacher's own rounding error in that
  dtype and mode (the teacher in bfloat16 already differs from the float64 teacher by ~1e-2,
  and BatchNorm over a batch of 4 at 1x1 spatial size in train mode amplifies rounding);
* the same seed gives the same student, bit for bit.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from fuzz.profiles import one_thread  # noqa: F401
from helpers import teacher_unchanged
from torch.utils import _pytree as pytree

import fxgrow
from fxgrow.verify.compare import outputs

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2}
NOISE_FACTOR = 4

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 4)
        self.fc2 = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.2)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = h + F.relu(self.conv(h))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(h.mean((2, 3))))))
        h = h * s[:, :, None, None]
        return self.head(self.drop(self.ln(h.mean((2, 3)))))


class TinyTransformer(nn.Module):
    """Patch embedding, position embedding, two pre-norm blocks, mean pooling, head."""

    def __init__(self, d: int = 16, heads: int = 2, depth: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.pos = nn.Parameter(torch.randn(1, 16, d) * 0.02)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                dict(
                    ln1=nn.LayerNorm(d),
                    attn=nn.MultiheadAttention(d, heads, batch_first=True),
                    ln2=nn.LayerNorm(d),
                    fc1=nn.Linear(d, 2 * d),
                    fc2=nn.Linear(2 * d, d),
                    drop=nn.Dropout(0.1),
                )
            )
            for _ in range(depth)
        )
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for b in self.blocks:
            h = b["ln1"](t)
            t = t + b["attn"](h, h, h, need_weights=False)[0]
            t = t + b["fc2"](b["drop"](F.gelu(b["fc1"](b["ln2"](t)))))
        return self.head(self.ln(t).mean(1))


MODELS = {
    "toy": (Toy, 16),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), 32),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), 32),
    "tiny_transformer": (TinyTransformer, 16),
}


def make(name: str):
    ctor, size = MODELS[name]
    torch.manual_seed(0)
    model = ctor().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in a trained model
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, x


def rel(a, b) -> float:
    a = torch.cat([t.detach().double().cpu().reshape(-1) for t in pytree.tree_leaves(a)])
    b = torch.cat([t.detach().double().cpu().reshape(-1) for t in pytree.tree_leaves(b)])
    return float((a - b).abs().max() / b.abs().max())


_REFERENCE: dict = {}


def reference(name: str, mode: str):
    """Outputs of the float64 teacher on the CPU (computed once per model and mode)."""
    if (name, mode) not in _REFERENCE:
        model, x = make(name)
        _REFERENCE[name, mode] = outputs(model.double(), (x.double(),), mode)
    return _REFERENCE[name, mode]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("name", list(MODELS))
def test_matrix(name, dtype, device):
    model, x = make(name)
    teacher, x = model.to(device=device, dtype=dtype), x.to(device=device, dtype=dtype)
    flags = [m.training for m in teacher.modules()]
    with teacher_unchanged(teacher):
        student = fxgrow.widen(teacher, x, factor=1.5, seed=1, verify=False)
        grown = [
            p for n, p in student.named_parameters() if p.shape != teacher.get_parameter(n).shape
        ]
        assert grown, "nothing was widened"
        for t in [*student.parameters(), *student.buffers()]:
            assert t.device.type == device
            assert not t.is_floating_point() or t.dtype == dtype
        for mode in ("eval", "train"):
            ref = reference(name, mode)
            noise = rel(outputs(teacher, (x,), mode), ref)
            tol = max(TOL[dtype], NOISE_FACTOR * noise)
            err = fxgrow.compare(teacher, student, x, mode=mode)
            assert err.max_rel <= tol, (mode, err, noise)
            assert rel(outputs(student, (x,), mode), ref) <= tol + noise, (mode, noise)
    assert flags == [m.training for m in teacher.modules()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["toy", "resnet18", "tiny_transformer"])
def test_same_seed_same_student(name, device):
    model, x = make(name)
    model, x = model.to(device), x.to(device)
    a = fxgrow.widen(model, x, factor=1.5, seed=7)
    b = fxgrow.widen(model, x, factor=1.5, seed=7)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    with torch.no_grad():
        for ya, yb in zip(pytree.tree_leaves(a(x)), pytree.tree_leaves(b(x))):
            assert torch.equal(ya, yb)
    other = fxgrow.plan(model, x, factor=1.5, seed=8)
    assert other.changes != fxgrow.plan(model, x, factor=1.5, seed=7).changes


@CUDA
def test_cuda_student_matches_cpu_student():
    """The plan does not depend on the device: the CUDA student is the CPU student moved."""
    model, x = make("toy")
    cpu = fxgrow.widen(model, x, factor=2, seed=3)
    gpu = fxgrow.widen(copy.deepcopy(model).cuda(), x.cuda(), factor=2, seed=3)
    for (k, v), (k2, v2) in zip(cpu.state_dict().items(), gpu.state_dict().items()):
        assert k == k2 and v2.device.type == "cuda" and torch.equal(v, v2.cpu()), k
