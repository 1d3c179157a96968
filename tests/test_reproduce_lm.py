"""The language-model reproduction's --quick slice runs end to end on CPU."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))


@pytest.mark.slow
def test_reproduce_lm_quick(tmp_path, capsys):
    import reproduce_lm

    assert reproduce_lm.main(["--quick", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    runs = doc["results"][0]["runs"]
    assert len([k for k in runs if "/" in k]) == 10
    for key, run in runs.items():
        if "/" in key and not key.startswith("random pad"):
            assert run["error_at_growth"] < 1e-5, key  # every exact recipe is exact
    assert runs["random pad/cont"]["error_at_growth"] > 1e-2
    assert "| zero | rewarm |" in capsys.readouterr().out


def test_flops_and_saved_bookkeeping():
    import reproduce_lm as r

    cfg = dict(d=64, layers=2, ctx=128, N=100)
    big = r.flops_per_token(128, 4, 128)
    assert big == 6 * (4 * 12 * 128 * 128 + 256 * 128) + 6 * 4 * 128 * 128
    result = {
        "runs": {
            "scratch": {"hist": [(100, 1.0)]},
            "zero/cont": {"hist": [(0, 2.0), (40, 1.1), (50, 0.99)]},
        }
    }
    small = r.flops_per_token(64, 2, 128)
    assert r.saved(result, cfg, "zero/cont") == pytest.approx(
        1 - (25 * small + 50 * big) / (100 * big)
    )
    result["runs"]["zero/cont"]["hist"][-1] = (50, 1.01)
    assert r.saved(result, cfg, "zero/cont") is None
