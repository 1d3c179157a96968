"""What closes the gap after growth?  The language model of ``reproduce_lm.py`` grown with
``init="zero"`` under post-growth recipes that change only the optimisation:

* the teacher's AdamW state carried over (``fxgrow.transfer_optimizer``) instead of a fresh one;
* a lower post-growth peak learning rate with a short warm-up;
* growth earlier or later (the teacher's share of the budget).

Every grown run gets the from-scratch run's compute: ``S = N - T * small / big`` student steps
after ``T`` teacher steps (``T = teacher_frac x N``).  Compute saved = 1 - (teacher FLOPs +
student FLOPs until the validation loss first reaches a target) / (the from-scratch run's FLOPs
to that target); the goal's target is the from-scratch run's final loss (its FLOPs: all N
steps), the intermediate one its loss at N/2.

    python tools/reproduce_lm_study.py --quick            # a smoke slice (seconds)
    nice -n 10 python tools/reproduce_lm_study.py --out DIR   # the CPU-scale study (~40 min)
    python tools/reproduce_lm_study.py --from DIR/results.json --docs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import NamedTuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reproduce_lm as lm

import fxgrow


class Variant(NamedTuple):
    """One post-growth recipe: always ``init="zero"``; ``lr_scale=None`` continues the
    teacher's cosine, else a new warm-up of ``warmup x S`` steps to ``lr_scale x`` peak, then
    cosine to zero over ``S``."""

    name: str
    transfer: bool
    lr_scale: float | None = None
    warmup: float = 0.02
    teacher_frac: float = 0.25


VARIANTS = (
    Variant("fresh AdamW", False),
    Variant("optimizer transferred", True),
    Variant("optimizer transferred, peak LR x0.5, short warm-up", True, 0.5),
)
MORE = (  # not in the default CPU run (time): the LR change alone, growth earlier or later
    Variant("fresh AdamW, peak LR x0.5, short warm-up", False, 0.5),
    Variant("optimizer transferred, grown at N/8", True, teacher_frac=0.125),
    Variant("optimizer transferred, grown at N/2", True, teacher_frac=0.5),
)


def _ratio(cfg: dict) -> float:
    return lm.flops_per_token(cfg["d"], cfg["layers"], cfg["ctx"]) / lm.flops_per_token(
        2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"]
    )


def steps_of(v: Variant, cfg: dict) -> tuple[int, int]:
    """(teacher steps T, student steps S) with teacher + student FLOPs = the scratch run's."""
    T = max(1, round(v.teacher_frac * cfg["N"]))
    return T, max(1, round(cfg["N"] - T * _ratio(cfg)))


def grow_zero(teacher: lm.ByteLM, cfg: dict, seed: int, data) -> torch.nn.Module:
    x = lm.batch_at(data, 10**7, seed, 4, cfg["ctx"])[:, :-1].to(cfg["device"])
    return fxgrow.grow(
        teacher,
        x,
        width=2.0,
        blocks={"blocks": 2 * cfg["layers"]},
        init="zero",
        split="random",
        seed=seed,
        verify=False,
    )


def run_seed(seed: int, lr: float, cfg: dict, data, log, scratch_hist=None) -> dict:
    train_data, val_data = data
    dev, N, every = cfg["device"], cfg["N"], cfg["eval_every"]
    val = [
        lm.batch_at(val_data, k, 12345, cfg["batch"], cfg["ctx"]).to(dev)
        for k in range(cfg["val_batches"])
    ]
    out: dict = {"seed": seed, "lr": lr, "runs": {}}
    t0 = time.time()
    if scratch_hist is None:
        scratch_hist = []
        torch.manual_seed(seed)
        big = lm.ByteLM(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"], cfg["head_dim"]).to(dev)
        lm.train(
            big,
            lm.schedule(lr, N, max(1, N // 20)),
            N,
            train_data,
            seed,
            cfg,
            val,
            0,
            every,
            scratch_hist,
        )
    out["runs"]["scratch"] = {"hist": scratch_hist}
    log(f"seed {seed}: scratch final {scratch_hist[-1][1]:.4f} ({time.time() - t0:.0f} s)")
    teachers: dict = {}
    for v in cfg["variants"]:
        v = Variant(*v)
        T, S = steps_of(v, cfg)
        if T not in teachers:  # the teacher's cosine spans T + S: one teacher per growth point
            torch.manual_seed(seed)
            teacher = lm.ByteLM(cfg["d"], cfg["layers"], cfg["ctx"], cfg["head_dim"]).to(dev)
            th: list = []
            opt = lm.train(
                teacher,
                lm.schedule(lr, T + S, max(1, N // 20)),
                T,
                train_data,
                seed,
                cfg,
                val,
                0,
                every,
                th,
            )
            teacher.eval()
            teachers[T] = (teacher, opt, th)
        teacher, opt, th = teachers[T]
        t1 = time.time()
        student = grow_zero(teacher, cfg, seed, train_data)
        with torch.no_grad():
            err = float((teacher(val[0][:, :-1]) - student(val[0][:, :-1])).abs().max())
        new_opt = fxgrow.transfer_optimizer(opt, teacher, student) if v.transfer else None
        if v.lr_scale is None:
            lr_at = lm.schedule(lr, T + S, max(1, N // 20), start=T)
        else:
            lr_at = lm.schedule(v.lr_scale * lr, S, max(1, round(v.warmup * S)))
        sh = [(0, lm.val_loss(student, val))]
        lm.train(student, lr_at, S, train_data, seed, cfg, val, T, every, sh, opt=new_opt)
        out["runs"][v.name] = {"hist": sh, "error_at_growth": err, "T": T, "S": S, "teacher": th}
        log(
            f"seed {seed}: {v.name}: T={T}, growth error {err:.1e}, val {sh[0][1]:.4f} -> "
            f"{sh[-1][1]:.4f} ({time.time() - t1:.0f} s)"
        )
    return out


def _first(hist: list, target: float) -> int | None:
    return next((step for step, loss in hist if loss <= target + 1e-12), None)


def saved(result: dict, cfg: dict, key: str, at: float = 1.0) -> float | None:
    """Compute saved to reach the from-scratch run's loss at ``at x N`` steps (None: not
    reached within the equal-compute budget)."""
    hist = result["runs"]["scratch"]["hist"]
    n_at = at * cfg["N"]
    target = [loss for step, loss in hist if step <= n_at + 1e-9][-1]
    ref = cfg["N"] if at == 1.0 else _first(hist, target)
    run = result["runs"][key]
    step = _first(run["hist"], target)
    if step is None:
        return None
    return 1 - (run["T"] * _ratio(cfg) + step) / ref


def summarise(results: list[dict], cfg: dict) -> list[str]:
    keys = [k for k in results[0]["runs"] if k != "scratch"]
    ms = lm._ms
    lines = [
        '| post-growth recipe (init="zero") | growth at | max abs err at growth | val '
        "loss at growth -> worst of the next 3 evaluations | final val loss (equal compute) | reached scratch final "
        "| compute saved: final loss | compute saved: scratch's loss at N/2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fin = [r["runs"]["scratch"]["hist"][-1][1] for r in results]
    lines.append(
        f"| from scratch (big, LR {results[0]['lr']:g}) | - | - | - | {ms(fin, 4)} | "
        "- | 0 (reference) | 0 (reference) |"
    )

    def sv(key, at):
        got = [s for s in (saved(r, cfg, key, at) for r in results) if s is not None]
        return (
            f"{ms([100 * s for s in got], 1)} % ({len(got)}/{len(results)})"
            if got
            else f"not reached (0/{len(results)})"
        )

    for key in keys:
        runs = [r["runs"][key] for r in results]
        start = [run["hist"][0][1] for run in runs]
        bump = [max(loss for _, loss in run["hist"][1:4]) for run in runs]
        lines.append(
            f"| {key} | N x {runs[0]['T'] / cfg['N']:g} | "
            f"{max(x['error_at_growth'] for x in runs):.1e} | {ms(start, 3)} -> {ms(bump, 3)} | "
            f"{ms([x['hist'][-1][1] for x in runs], 4)} | "
            f"{sum(s is not None for s in (saved(r, cfg, key) for r in results))}/"
            f"{len(results)} | {sv(key, 1.0)} | {sv(key, 0.5)} |"
        )
    return lines


def plot(results: list[dict], cfg: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tok = cfg["batch"] * cfg["ctx"]
    big = lm.flops_per_token(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"])
    fig, ax = plt.subplots(figsize=(8, 4.8))

    def mean(key):
        h = [r["runs"][key]["hist"] for r in results]
        return [s for s, _ in h[0]], [sum(x[i][1] for x in h) / len(h) for i in range(len(h[0]))]

    s, y = mean("scratch")
    ax.plot([k * big * tok / 1e12 for k in s], y, color="k", lw=2, label="from scratch (big)")
    for key in results[0]["runs"]:
        if key == "scratch":
            continue
        T = results[0]["runs"][key]["T"]
        s, y = mean(key)
        ax.plot([(T * _ratio(cfg) + k) * big * tok / 1e12 for k in s], y, label=key)
    target = sum(r["runs"]["scratch"]["hist"][-1][1] for r in results) / len(results)
    ax.axhline(target, color="k", lw=0.5, ls=":")
    ax.set_ylim(target - 0.35, target + 0.9)
    ax.set_xlabel("training FLOPs (x 1e12)")
    ax.set_ylabel("validation loss (nats / byte)")
    ax.set_title('CPU-scale study: init="zero", post-growth optimisation')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_docs(doc: dict) -> None:
    results, cfg, meta = doc["results"], doc["cfg"], doc["meta"]
    plot(results, cfg, os.path.join(lm.ROOT, "docs", "img", "reproduce_lm_study.png"))
    body = [
        "<!-- reproduce_lm_study: begin (tools/reproduce_lm_study.py --docs writes this block) -->",
        f"CPU-scale run ({meta['device']}, {meta['seconds'] / 60:.0f} min wall, "
        f"{meta.get('workers', 1)} single-thread processes on a shared, loaded 2-core "
        f"machine): teacher d={cfg['d']}, {cfg['layers']} layers -> student/from scratch "
        f"d={2 * cfg['d']}, {2 * cfg['layers']} layers, heads of {cfg['head_dim']}; context "
        f"{cfg['ctx']} bytes, batch {cfg['batch']}, N={cfg['N']} from-scratch steps; peak LR "
        f"tuned on seed 0 over {meta['lrs']}: {results[0]['lr']:g} (finals "
        f"{meta['lr_finals']}); {len(results)} seeds; every grown run gets the from-scratch "
        "run's FLOPs.",
        "",
        *summarise(results, cfg),
        "",
        "![CPU-scale study](img/reproduce_lm_study.png)",
        "<!-- reproduce_lm_study: end -->",
    ]
    lm.replace_section(os.path.join(lm.ROOT, "docs", "reproduction.md"), "reproduce_lm_study", body)


def _seed_job(job) -> dict:
    seed, lr, cfg, out_dir, scratch = job
    torch.set_num_threads(1)
    out = run_seed(seed, lr, cfg, lm.stdlib_bytes(), lm._log, scratch)
    with open(os.path.join(out_dir, f"seed{seed}.json"), "w") as fh:  # survives a cut run
        json.dump(out, fh)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny slice (smoke test)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200, help="N, the from-scratch run's steps")
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--lrs",
        default="4e-3,8e-3",
        help="peak LRs tried for scratch on seed 0 (one: no tuning run)",
    )
    p.add_argument("--more", action="store_true", help="also the variants in MORE")
    p.add_argument(
        "--only-more",
        action="store_true",
        help="only the variants in MORE (with --reuse: added to an earlier run)",
    )
    p.add_argument(
        "--reuse",
        help="results.json of an earlier run with the same settings: its "
        "from-scratch runs are reused and its variants kept",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (seeds in parallel)")
    p.add_argument("--out", default="fxgrow-reproduce-lm-study-out")
    p.add_argument("--from", dest="from_")
    p.add_argument("--docs", action="store_true")
    a = p.parse_args(argv)
    if a.from_:
        with open(a.from_) as fh:
            doc = json.load(fh)
        print("\n".join(summarise(doc["results"], doc["cfg"])))
        if a.docs:
            write_docs(doc)
        return 0
    torch.set_num_threads(1)
    cfg = dict(
        d=a.d,
        layers=a.layers,
        ctx=a.ctx,
        batch=a.batch,
        N=a.steps,
        device="cpu",
        head_dim=a.head_dim,
        eval_every=max(1, a.steps // 20),
        val_batches=4,
        variants=[list(v) for v in (MORE if a.only_more else VARIANTS + (MORE if a.more else ()))],
    )
    lrs, seeds = [float(x) for x in a.lrs.split(",")], a.seeds
    if a.quick:
        cfg.update(d=16, layers=1, ctx=16, batch=4, N=16, eval_every=4, val_batches=1, head_dim=8)
        lrs, seeds = [3e-3], 1
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    finals: dict = {}
    if len(lrs) > 1:  # seed 0's from-scratch run at each candidate LR
        data = lm.stdlib_bytes()
        val = [
            lm.batch_at(data[1], k, 12345, cfg["batch"], cfg["ctx"])
            for k in range(cfg["val_batches"])
        ]
        for lr in lrs:
            torch.manual_seed(0)
            big = lm.ByteLM(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"], cfg["head_dim"])
            h: list = []
            lm.train(
                big,
                lm.schedule(lr, cfg["N"], max(1, cfg["N"] // 20)),
                cfg["N"],
                data[0],
                0,
                cfg,
                val,
                0,
                cfg["N"],
                h,
            )
            finals[lr] = h[-1][1]
            lm._log(f"lr {lr:g}: scratch final {h[-1][1]:.4f}")
    lr = min(finals, key=finals.get) if finals else lrs[0]
    earlier = None
    if a.reuse:
        with open(a.reuse) as fh:
            earlier = json.load(fh)
        same = ("d", "layers", "ctx", "batch", "N", "head_dim", "eval_every", "val_batches")
        if any(earlier["cfg"][k] != cfg[k] for k in same) or earlier["results"][0]["lr"] != lr:
            p.error("--reuse: the earlier run's settings differ from these")
        finals = {float(k): v for k, v in earlier["meta"]["lr_finals"].items()}
    jobs = [
        (s, lr, cfg, a.out, earlier["results"][s]["runs"]["scratch"]["hist"] if earlier else None)
        for s in range(seeds)
    ]
    if a.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(a.workers) as pool:
            results = pool.map(_seed_job, jobs)
    else:
        results = [_seed_job(j) for j in jobs]
    if earlier:  # the earlier variants first, then these
        for old, new in zip(earlier["results"], results):
            old["runs"].update(new["runs"])
        results = earlier["results"]
        cfg["variants"] = earlier["cfg"]["variants"] + cfg["variants"]
    with open(os.path.join(a.out, "results.json"), "w") as fh:
        json.dump(
            {
                "cfg": cfg,
                "results": results,
                "meta": {
                    "lrs": lrs,
                    "lr_finals": {str(k): round(v, 4) for k, v in finals.items()},
                    "device": "CPU",
                    "workers": a.workers,
                    "seconds": time.time() - t0 + (earlier["meta"]["seconds"] if earlier else 0),
                    "torch": torch.__version__,
                },
            },
            fh,
        )
    print("\n".join(summarise(results, cfg)))
    if a.docs:
        with open(os.path.join(a.out, "results.json")) as fh:
            write_docs(json.load(fh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
