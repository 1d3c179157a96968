"""The demo (tools/fxgrow_demo, an example beside the library): its command line, and a short
real run whose student is exact and whose results.json says so."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))


def test_command_line_passes_its_options(monkeypatch):
    import fxgrow_demo.__main__ as cli
    import fxgrow_demo.demo as demo

    seen = {}

    def run(factor, seed, **kwargs):
        seen.update(factor=factor, seed=seed, **kwargs)
        return 0

    monkeypatch.setattr(demo, "run", run)
    assert cli.main(["--factor", "2", "--out-dir", "o", "--student-steps", "5", "-q"]) == 0
    assert seen == {"factor": 2.0, "seed": 0, "out_dir": "o", "student_steps": 5, "progress": False}


def test_short_run_grows_exactly(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from fxgrow_demo import Config, run

    cfg = Config(eval_every=10, noise_window=5)
    assert (
        run(
            1.5,
            0,
            out_dir=str(tmp_path),
            teacher_steps=20,
            student_steps=10,
            progress=False,
            config=cfg,
        )
        == 0
    )
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["student_widths"] == [24, 48] and doc["student_blocks"] == [3, 3]
    assert doc["params"][1] > doc["params"][0]
    assert doc["preservation"]["eval_max_abs"] < 1e-4
    assert doc["loss_before"] == pytest.approx(doc["loss_after"], rel=1e-4)
    assert len(doc["grown"]["losses"]) == 30 and len(doc["scratch"]["losses"]) == 30
    assert f"loss on the next batch  teacher {doc['loss_before']:.6f}" in out
    assert "widths 24/48, blocks 3/3" in out
    assert (tmp_path / "student.safetensors").is_file()
