"""torch.tensor_split (indices and sections), torchvision MViT's wrapped helpers
(``_unsqueeze``, ``_squeeze``, ``_add_shortcut``, ``_add_rel_pos``) and the video Swin's window
attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from helpers import widen_exact

import fxgrow
from fxgrow.errors import BlockedGroupError


class SplitAt(nn.Module):
    """``tensor_split`` at index 2: two pieces with their own maps."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(2, 3), nn.Linear(4, 3)
        if isinstance(spec, int):
            self.b, self.c = nn.Linear(6 // spec, 3), nn.Linear(6 // spec, 3)

    def forward(self, x):
        p, q = torch.tensor_split(torch.relu(self.a(x)), self.spec, dim=-1)
        return self.b(p) + self.c(q)


@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.parametrize("spec", [(2,), 2])
def test_tensor_split_grows_exactly(frontend, spec):
    m, x = SplitAt(spec).double(), torch.randn(3, 4, dtype=torch.float64)
    s = widen_exact(m, x, tol=1e-12, factor=2, frontend=frontend)
    assert sum(p.numel() for p in s.parameters()) > sum(p.numel() for p in m.parameters())


def test_tensor_split_into_unequal_sections_blocks():
    class Uneven(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 5), nn.Linear(3, 3), nn.Linear(2, 3)

        def forward(self, x):
            p, q = torch.tensor_split(self.a(x), 2, dim=-1)
            return self.b(p) + self.c(q)

    m, x = Uneven(), torch.randn(3, 4)
    with pytest.raises(BlockedGroupError, match="unequal sections"):
        fxgrow.widen(m, x, widths={"a[0:3]": 6})


@pytest.mark.parametrize("name", ["mvit_v1_b", "mvit_v2_s"])
def test_mvit_has_no_op_blocker_and_grows_exactly(name):
    torch.manual_seed(0)
    m = getattr(torchvision.models.video, name)().eval()
    x = torch.randn(1, 3, 16, 224, 224)
    a = fxgrow.analyze(m, x)
    assert not [b for g in a.groups for b in g.blockers if b.kind == "op"]
    assert sum(g.widenable for g in a.groups) >= 30
    s = fxgrow.widen(m, x, factor=1.5)
    assert fxgrow.compare(m, s, x).max_rel <= 1e-5


def test_swin3d_t_has_no_op_blocker_and_grows_exactly():
    torch.manual_seed(0)
    m = torchvision.models.video.swin3d_t().eval()
    x = torch.randn(1, 3, 8, 64, 64)
    a = fxgrow.analyze(m, x)
    assert not [b for g in a.groups for b in g.blockers if b.kind == "op"]
    s = fxgrow.widen(m, x, factor=1.5)
    assert fxgrow.compare(m, s, x).max_rel <= 1e-5
