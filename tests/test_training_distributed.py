"""Growth in the middle of a distributed run (issue 15, item 5): ``tools/examples/grow_ddp.py``
under ``torchrun`` with 2 CPU processes (gloo).  Every rank grows the same student (checked
parameter by parameter against rank 0's), training goes on 5 more steps after the growth step
under DDP, and the parameters are still identical across ranks; the loss on the growth batch is
the same right before and right after.  The same run with ZeroRedundancyOptimizer (sharded
state mapped, gathered and re-partitioned) and with FSDP2 after growth ends at the very loss of
the plain AdamW run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tools" / "examples" / "grow_ddp.py"
REFERENCE: dict = {}


def run(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(EXAMPLE),
        "--steps",
        "15",
        "--grow-at",
        "10",
        "--out",
        str(out),
        *flags,
    ]
    proc = subprocess.run(
        cmd, check=False, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("flags", [(), ("--zero",), ("--fsdp",)], ids=["ddp", "zero", "fsdp2"])
def test_grow_under_torchrun(tmp_path, flags):
    result = run(tmp_path, *flags)
    assert result["world_size"] == 2
    assert result["identical_after_growth"] is True
    assert result["identical_at_end"] is True
    assert result["steps_after_growth"] == 6  # the growth step itself and 5 more
    assert result["loss_after"] == pytest.approx(result["loss_before"], rel=1e-5)
    assert result["params"][1] > 4 * result["params"][0]
    if not flags:
        REFERENCE["final_loss"] = result["final_loss"]
    elif "final_loss" in REFERENCE:
        assert result["final_loss"] == pytest.approx(REFERENCE["final_loss"], rel=1e-5)
