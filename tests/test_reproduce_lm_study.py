"""The post-growth optimisation study (tools/reproduce_lm_study.py): its bookkeeping, and its
--quick slice end to end (optimizer state carried over a width x2 + depth x2 growth)."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))


def test_equal_compute_steps_and_saved():
    import reproduce_lm as lm
    import reproduce_lm_study as st

    cfg = dict(d=32, layers=2, ctx=64, N=200)
    ratio = lm.flops_per_token(32, 2, 64) / lm.flops_per_token(64, 4, 64)
    v = st.Variant("x", True, teacher_frac=0.5)
    T, S = st.steps_of(v, cfg)
    assert T == 100 and round(200 - 100 * ratio) == S
    result = {
        "runs": {
            "scratch": {"hist": [(50, 2.0), (100, 1.5), (150, 1.2), (200, 1.0)]},
            "x": {"T": 100, "hist": [(0, 1.8), (60, 1.4), (120, 0.99)]},
        }
    }
    assert st.saved(result, cfg, "x") == pytest.approx(1 - (100 * ratio + 120) / 200)
    # the intermediate target: scratch's loss at N/2 (1.5, reached by scratch at step 100)
    assert st.saved(result, cfg, "x", 0.5) == pytest.approx(1 - (100 * ratio + 60) / 100)
    result["runs"]["x"]["hist"][-1] = (120, 1.01)
    assert st.saved(result, cfg, "x") is None


@pytest.mark.slow
def test_study_quick(tmp_path, capsys):
    import reproduce_lm_study as st

    assert st.main(["--quick", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    runs = doc["results"][0]["runs"]
    assert set(runs) == {"scratch"} | {v.name for v in st.VARIANTS}
    for v in st.VARIANTS:
        assert runs[v.name]["error_at_growth"] < 1e-5, v.name  # init="zero" is exact
        run = runs[v.name]  # teacher + student FLOPs = the from-scratch run's
        assert abs(run["T"] * st._ratio(doc["cfg"]) + run["S"] - doc["cfg"]["N"]) <= 0.5
    assert "| optimizer transferred |" in capsys.readouterr().out
