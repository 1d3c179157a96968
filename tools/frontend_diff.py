#!/usr/bin/env python
"""fx against torch.export over the torchvision zoo: same channel groups, exact student?

Per model (each in its own forked subprocess, under a time limit): the groups under
``frontend="fx"`` and ``frontend="export"`` compared by width, unit, widenability and their
parameter/buffer members (``fxgrow.frontend.compare``), then the export student grown by
``--factor`` and verified.  Prints one line per model and ``N/M equal groups``.

    .venv/bin/python tools/frontend_diff.py --family classification --json /tmp/fe.json
    .venv/bin/python tools/frontend_diff.py --models resnet18,mobilenet_v3_small
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def one(name: str, factor: float, max_params: float, student: bool = True) -> dict:
    """Everything for one torchvision model (runs in the child)."""
    import torch
    from sweep import _count, build_torchvision

    import fxgrow
    from fxgrow.errors import FxgrowError
    from fxgrow.frontend.compare import compare_frontends

    t0 = time.time()
    row: dict = {"name": name}
    try:
        n = _count(build_torchvision(name, meta=True)[0])
    except Exception:
        rows = json.loads((ROOT / "docs" / "zoo_sweep.json").read_text())["results"]
        n = next((r.get("params") or 0 for r in rows if r["name"] == name), 0)
    if n > max_params:
        return row | {"status": "skipped", "detail": f"more than {max_params:.0f} parameters"}
    torch.manual_seed(0)
    model, x = build_torchvision(name)
    model.eval()
    try:
        diff = compare_frontends(model, x)
    except FxgrowError as e:
        return row | {"status": "error", "detail": f"{type(e).__name__}: {e}".splitlines()[0]}
    row |= {
        "status": "equal" if diff.equal else "differ",
        "detail": diff.describe(),
        "fx_groups": diff.fx_groups,
        "export_groups": diff.export_groups,
        "fx_widenable": diff.fx_widenable,
        "export_widenable": diff.export_widenable,
    }
    if diff.export_widenable and student:
        try:
            student = fxgrow.widen(model, x, factor=factor, frontend="export", as_graph=True)
            cmp = getattr(fxgrow.growth_record(student), "error", None)
            row["student"] = "exact"
            row["max_rel"] = getattr(cmp, "max_rel", None)
        except FxgrowError as e:
            row["student"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return row | {"seconds": round(time.time() - t0, 1)}


def _child(name: str, factor: float, max_params: float, student: bool, conn) -> None:
    try:
        conn.send(one(name, factor, max_params, student))
    except BaseException as e:
        conn.send({"name": name, "status": "BUG", "detail": f"{type(e).__name__}: {e}"[:300]})


def run(name: str, factor: float, max_params: float, timeout: float, student: bool = True) -> dict:
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(name, factor, max_params, student, send), daemon=True)
    p.start()
    send.close()
    if recv.poll(timeout):
        try:
            row = recv.recv()
        except EOFError:
            row = {"name": name, "status": "BUG", "detail": f"child died ({p.exitcode})"}
    else:
        p.kill()
        row = {"name": name, "status": "BUG", "detail": f"timeout after {timeout:.0f} s"}
    p.join()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated torchvision model names")
    ap.add_argument(
        "--family",
        default="classification",
        help="torchvision submodule when --models is not given",
    )
    ap.add_argument("--factor", type=float, default=1.5)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--max-params", type=float, default=150e6)
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the rows already in --json; run only the other models",
    )
    ap.add_argument("--no-student", action="store_true", help="compare the groups only")
    a = ap.parse_args(argv)
    if a.models:
        names = a.models.split(",")
    else:
        from sweep import torchvision_cases

        names = [c.name for c in torchvision_cases() if c.family == a.family]
        sweep_rows = json.loads((ROOT / "docs" / "zoo_sweep.json").read_text())["results"]
        size = {r["name"]: r.get("params") or 0 for r in sweep_rows}
        names.sort(key=lambda n: size.get(n, 0))  # the small models first
    rows = json.loads(a.json.read_text()) if a.keep and a.json and a.json.exists() else []
    done = {r["name"] for r in rows}
    for name in [n for n in names if n not in done]:
        row = run(name, a.factor, a.max_params, a.timeout, not a.no_student)
        rows.append(row)
        print(
            f"{name:28s} {row['status']:8s} {row.get('student', ''):6s} {row['detail']}", flush=True
        )
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
    ran = [r for r in rows if r["status"] != "skipped"]
    equal = sum(r["status"] == "equal" for r in ran)
    exact = sum(r.get("student") == "exact" for r in ran)
    print(
        f"{equal}/{len(ran)} equal groups; {exact}/{len(ran)} exact export students "
        f"({len(rows) - len(ran)} skipped)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
