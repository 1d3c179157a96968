"""Does growth save compute on a language model?  A byte-level decoder-only transformer trained
on the Python standard library's own sources, grown 2x wider and 2x deeper with fxgrow's
recipes, against the big model trained from scratch with its learning rate tuned for itself.

Protocol (per seed; ``N`` = the from-scratch run's steps):

* from scratch: the big model (``--d 2*d``, ``2*L`` layers), AdamW, linear warm-up then cosine
  to zero over ``N`` steps, peak LR the best of ``--lrs`` on seed 0;
* teacher: the small model (``d``, ``L``) for ``T = N/4`` steps of a schedule that spans
  ``T + S`` steps (``S``: the student's steps, ``--student-frac`` x N), same peak LR;
* growth (fxgrow.grow, width x2 and blocks x2, verified exact in float32 on a validation
  batch; random pad is not exact by design) and ``S`` student steps with a fresh AdamW.
  Recipes: ``replicate`` (Net2Net, equal split), ``replicate+split`` (random split),
  ``zero`` (fresh fan-in, zero fan-out where exact, random split elsewhere), ``gradmax``
  (fan-in from a training batch's gradients), ``random pad`` (teacher weights in the leading
  slices of a freshly initialised big model: not function preserving);
  schedules: ``cont`` (the teacher's cosine goes on: no post-growth schedule) and ``rewarm``
  (a new warm-up of ``S/20`` steps to the peak LR, then cosine to zero over ``S``).

Compute saved = 1 - (teacher FLOPs + student FLOPs until its validation loss first reaches the
from-scratch run's final validation loss) / (the from-scratch run's FLOPs).  Training FLOPs per
token: 6 x (non-embedding parameters + LM head) + 6 x layers x context x d (attention).

    python tools/reproduce_lm.py --quick                 # a CPU smoke slice (< 2 min)
    python tools/reproduce_lm.py --out DIR               # the full protocol (a GPU: minutes)
    python tools/reproduce_lm.py --from DIR/results.json --docs   # table + plot into docs/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import sysconfig
import time
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import fxgrow

RECIPES = ("replicate", "replicate+split", "zero", "gradmax", "random pad")
SCHEDULES = ("cont", "rewarm")


# -- data -----------------------------------------------------------------------------------------
def stdlib_bytes() -> tuple[torch.Tensor, torch.Tensor]:
    """The standard library's .py sources (tests, idlelib and site-packages left out) as bytes;
    files go to validation by a hash of their path (1 in 20)."""
    root = sysconfig.get_paths()["stdlib"]
    train, val = bytearray(), bytearray()
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(
            x for x in dirs if x not in ("test", "tests", "site-packages", "idlelib", "__pycache__")
        )
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), root)
                with open(os.path.join(d, f), "rb") as fh:
                    (val if zlib.crc32(rel.encode()) % 20 == 0 else train).extend(fh.read())
    return (
        torch.frombuffer(bytes(train), dtype=torch.uint8).long(),
        torch.frombuffer(bytes(val), dtype=torch.uint8).long(),
    )


def batch_at(data: torch.Tensor, step: int, seed: int, batch: int, ctx: int) -> torch.Tensor:
    """Windows of ``ctx + 1`` bytes; the same (seed, step) always gives the same batch."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, len(data) - ctx - 1, (batch,), generator=gen)
    return torch.stack([data[s : s + ctx + 1] for s in starts.tolist()])


# -- model ------------------------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (
            self.qkv(x).reshape(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ByteLM(nn.Module):
    """GPT-style pre-norm decoder over bytes; the context is always ``ctx`` long."""

    def __init__(self, d: int, layers: int, ctx: int, head_dim: int = 32) -> None:
        super().__init__()
        self.tok = nn.Embedding(256, d)
        self.pos = nn.Parameter(torch.randn(ctx, d) * 0.02)
        self.blocks = nn.Sequential(*[Block(d, d // head_dim) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, 256)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, ids):
        return self.head(self.ln(self.blocks(self.tok(ids) + self.pos)))


def flops_per_token(d: int, layers: int, ctx: int) -> int:
    return 6 * (layers * 12 * d * d + 256 * d) + 6 * layers * ctx * d


def lm_loss(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    logits = model(seq[:, :-1])
    return F.cross_entropy(logits.reshape(-1, 256).float(), seq[:, 1:].reshape(-1))


@torch.no_grad()
def val_loss(model: nn.Module, val: list[torch.Tensor]) -> float:
    was = model.training
    model.eval()
    out = sum(float(lm_loss(model, b)) for b in val) / len(val)
    model.train(was)
    return out


def schedule(peak: float, total: int, warmup: int, start: int = 0):
    """LR at step ``start + i``: linear warm-up, then cosine to zero at ``total``."""

    def at(i: int) -> float:
        s = start + i
        if s < warmup:
            return peak * (s + 1) / warmup
        return peak * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))

    return at


def adamw(model: nn.Module, lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)


def train(model, lr_at, steps, data, seed, cfg, val, offset=0, eval_every=0, hist=None, opt=None):
    """AdamW (``opt``, else a fresh one) for ``steps``; validation every ``eval_every`` steps
    into ``hist``: (step, loss).  Returns the optimizer."""
    opt = opt if opt is not None else adamw(model, lr_at(0))
    model.train()
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        seq = batch_at(data, offset + i, seed, cfg["batch"], cfg["ctx"]).to(cfg["device"])
        loss = lm_loss(model, seq)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if hist is not None and eval_every and ((i + 1) % eval_every == 0 or i + 1 == steps):
            hist.append((i + 1, val_loss(model, val)))
    return opt


def random_pad(teacher: ByteLM, cfg: dict, seed: int) -> ByteLM:
    """A freshly initialised big model with the teacher's weights in the leading slices
    (q, k and v each in their own rows): not function preserving."""
    torch.manual_seed(seed + 999)
    big = ByteLM(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"], cfg["head_dim"]).to(cfg["device"])
    small = dict(teacher.named_parameters())
    with torch.no_grad():
        for name, p in big.named_parameters():
            t = small.get(name)
            if t is None:
                continue
            if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
                p.view(3, -1, *p.shape[1:])[
                    (slice(None),)
                    + tuple(slice(0, s) for s in t.view(3, -1, *t.shape[1:]).shape[1:])
                ] = t.view(3, -1, *t.shape[1:])
            else:
                p[tuple(slice(0, s) for s in t.shape)] = t
    return big


def grow(teacher: ByteLM, recipe: str, cfg: dict, seed: int, data) -> nn.Module:
    if recipe == "random pad":
        return random_pad(teacher, cfg, seed)
    x = batch_at(data, 10**7, seed, 4, cfg["ctx"])[:, :-1].to(cfg["device"])
    init = {"zero": "zero", "gradmax": "gradmax"}.get(recipe, "replicate")
    split = "equal" if recipe == "replicate" else "random"
    extra = {}
    if init == "gradmax":
        extra = dict(
            loss_fn=lm_loss,
            batch=batch_at(data, 10**7 + 1, seed, cfg["batch"], cfg["ctx"]).to(cfg["device"]),
        )
    return fxgrow.grow(
        teacher,
        x,
        width=2.0,
        blocks={"blocks": 2 * cfg["layers"]},
        init=init,
        split=split,
        seed=seed,
        verify=False,
        **extra,
    )


def run_seed(seed: int, lr: float, cfg: dict, data, log, save=lambda out: None) -> dict:
    train_data, val_data = data
    dev = cfg["device"]
    val = [
        batch_at(val_data, k, 12345, cfg["batch"], cfg["ctx"]).to(dev)
        for k in range(cfg["val_batches"])
    ]
    N, T, every = cfg["N"], cfg["N"] // 4, cfg["eval_every"]
    S = round(cfg.get("student_frac", 1.0) * N)
    out = {"seed": seed, "lr": lr, "runs": {}}
    t0 = time.time()
    hist: list = []
    torch.manual_seed(seed)
    big = ByteLM(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"], cfg["head_dim"]).to(dev)
    train(big, schedule(lr, N, max(1, N // 20)), N, train_data, seed, cfg, val, 0, every, hist)
    out["runs"]["scratch"] = {"hist": hist}
    log(f"seed {seed}: scratch final {hist[-1][1]:.4f} ({time.time() - t0:.0f} s)")
    torch.manual_seed(seed)
    teacher = ByteLM(cfg["d"], cfg["layers"], cfg["ctx"], cfg["head_dim"]).to(dev)
    th: list = []
    train(
        teacher, schedule(lr, T + S, max(1, N // 20)), T, train_data, seed, cfg, val, 0, every, th
    )
    teacher.eval()
    out["runs"]["teacher"] = {"hist": th}
    save(out)
    for recipe in cfg["recipes"]:
        for sched in cfg["schedules"]:
            t1 = time.time()
            student = grow(teacher, recipe, cfg, seed, train_data)
            with torch.no_grad():
                err = float((teacher(val[0][:, :-1]) - student(val[0][:, :-1])).abs().max())
            lr_at = (
                schedule(lr, T + S, max(1, N // 20), start=T)
                if sched == "cont"
                else schedule(lr, S, max(1, S // 20))
            )
            sh = [(0, val_loss(student, val))]
            train(student, lr_at, S, train_data, seed, cfg, val, T, every, sh)
            out["runs"][f"{recipe}/{sched}"] = {"hist": sh, "error_at_growth": err}
            log(
                f"seed {seed}: {recipe}/{sched}: growth error {err:.1e}, val {sh[0][1]:.4f} -> "
                f"{sh[-1][1]:.4f} ({time.time() - t1:.0f} s)"
            )
            save(out)
    return out


def scratch_final(lr: float, cfg: dict, data, log) -> float:
    """The big model's final validation loss from scratch at peak LR ``lr`` (seed 0)."""
    train_data, val_data = data
    val = [
        batch_at(val_data, k, 12345, cfg["batch"], cfg["ctx"]).to(cfg["device"])
        for k in range(cfg["val_batches"])
    ]
    torch.manual_seed(0)
    big = ByteLM(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"], cfg["head_dim"]).to(cfg["device"])
    h: list = []
    train(
        big,
        schedule(lr, cfg["N"], max(1, cfg["N"] // 20)),
        cfg["N"],
        train_data,
        0,
        cfg,
        val,
        0,
        cfg["N"],
        h,
    )
    log(f"lr {lr:g}: scratch final val {h[-1][1]:.4f}")
    return h[-1][1]


_T0 = time.time()


def _log(msg: str) -> None:
    print(f"[{time.time() - _T0:6.0f} s] {msg}", flush=True)


def _tune_job(job) -> float:
    lr, cfg = job
    return scratch_final(lr, cfg, stdlib_bytes(), _log)


def _seed_job(job) -> dict:
    seed, lr, cfg, out_dir = job

    def save(out: dict) -> None:  # partial results survive a run cut short
        with open(os.path.join(out_dir, f"seed{seed}.json"), "w") as fh:
            json.dump(out, fh)

    return run_seed(seed, lr, cfg, stdlib_bytes(), _log, save)


# -- analysis ---------------------------------------------------------------------------------------
def saved(result: dict, cfg: dict, key: str) -> float | None:
    """Compute saved against the from-scratch run, or None if the target is not reached."""
    small = flops_per_token(cfg["d"], cfg["layers"], cfg["ctx"])
    big = flops_per_token(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"])
    target = result["runs"]["scratch"]["hist"][-1][1]
    T = cfg["N"] // 4
    for step, loss in result["runs"][key]["hist"]:
        if loss <= target:
            return 1 - (T * small + step * big) / (cfg["N"] * big)
    return None


def at_equal_flops(result: dict, cfg: dict, key: str) -> float | None:
    """The grown run's validation loss where teacher + student FLOPs equal the from-scratch
    run's (the last evaluation within that budget)."""
    small = flops_per_token(cfg["d"], cfg["layers"], cfg["ctx"])
    big = flops_per_token(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"])
    budget = cfg["N"] - (cfg["N"] // 4) * small / big
    within = [loss for step, loss in result["runs"][key]["hist"] if step <= budget + 1e-9]
    return within[-1] if within else None


def summarise(results: list[dict], cfg: dict) -> list[str]:
    keys = [k for k in results[0]["runs"] if "/" in k]
    lines = [
        "| recipe | post-growth LR | exact at growth (max abs err) | val loss at the "
        "from-scratch FLOPs | final val loss | reached from-scratch loss | compute saved "
        "(mean ± std) |",
        "|---|---|---|---|---|---|---|",
    ]
    fin = [r["runs"]["scratch"]["hist"][-1][1] for r in results]
    lines.append(
        f"| from scratch (big, tuned LR {results[0]['lr']:g}) | - | - | "
        f"{_ms(fin, 4)} | {_ms(fin, 4)} | - | 0 (reference) |"
    )
    for key in keys:
        recipe, sched = key.split("/")
        errs = [r["runs"][key]["error_at_growth"] for r in results]
        finals = [r["runs"][key]["hist"][-1][1] for r in results]
        sv = [saved(r, cfg, key) for r in results]
        got = [s for s in sv if s is not None]
        eq = [at_equal_flops(r, cfg, key) for r in results]
        eq_text = _ms(eq, 4) if all(v is not None for v in eq) else "-"
        lines.append(
            f"| {recipe} | {'rewarm' if sched == 'rewarm' else 'continued'} | "
            f"{max(errs):.1e} | {eq_text} | {_ms(finals, 4)} | {len(got)}/{len(sv)} | "
            + (f"{_ms([100 * s for s in got], 1)} %" if got else "-")
            + " |"
        )
    return lines


def _ms(xs: list[float], nd: int) -> str:
    m = sum(xs) / len(xs)
    s = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return f"{m:.{nd}f} ± {s:.{nd}f}"


def plot(results: list[dict], cfg: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    small = flops_per_token(cfg["d"], cfg["layers"], cfg["ctx"])
    big = flops_per_token(2 * cfg["d"], 2 * cfg["layers"], cfg["ctx"])
    tok = cfg["batch"] * cfg["ctx"]
    T = cfg["N"] // 4
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, sched in zip(axes, SCHEDULES):

        def curve(key, offset, per, ax=ax, **kw):
            steps = [s for s, _ in results[0]["runs"][key]["hist"]]
            ys = [
                sum(r["runs"][key]["hist"][i][1] for r in results) / len(results)
                for i in range(len(steps))
            ]
            ax.plot([(offset + s * per) * tok / 1e12 for s in steps], ys, **kw)

        curve("scratch", 0, big, color="k", lw=2, label="from scratch (big)")
        curve("teacher", 0, small, color="grey", lw=2, label="teacher (small)")
        for recipe in cfg["recipes"]:
            key = f"{recipe}/{sched}"
            if key in results[0]["runs"]:
                curve(key, T * small, big, label=recipe, ls="--" if recipe == "random pad" else "-")
        target = sum(r["runs"]["scratch"]["hist"][-1][1] for r in results) / len(results)
        ax.axhline(target, color="k", lw=0.5, ls=":")
        ax.set_title(
            "post-growth LR: "
            + ("re-warmed cosine" if sched == "rewarm" else "teacher's cosine continued")
        )
        ax.set_xlabel("training FLOPs (x 1e12)")
        ax.set_ylim(target - 0.15, target + 1.2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (nats / byte)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_docs(results: list[dict], cfg: dict, meta: dict) -> None:
    img = os.path.join(ROOT, "docs", "img", "reproduce_lm.png")
    plot(results, cfg, img)
    body = [
        "<!-- reproduce_lm: begin (tools/reproduce_lm.py --docs writes this block) -->",
        f"Measured on {meta.get('device', '?')}, {meta.get('seconds', 0):.0f} s; teacher "
        f"d={cfg['d']}, {cfg['layers']} layers -> student/from scratch d={2 * cfg['d']}, "
        f"{2 * cfg['layers']} layers; context {cfg['ctx']} bytes, batch {cfg['batch']}, "
        f"N={cfg['N']} from-scratch steps, teacher {cfg['N'] // 4}, student "
        f"{round(cfg.get('student_frac', 1.0) * cfg['N'])} steps; LR tuned on seed 0 over {meta.get('lrs')}: {results[0]['lr']:g} "
        f"(finals {meta.get('lr_finals')}); {len(results)} seeds; "
        f"{meta.get('train_bytes', 0) / 1e6:.1f} MB train, "
        f"{meta.get('val_bytes', 0) / 1e6:.2f} MB validation.",
        "",
        *summarise(results, cfg),
        "",
        "![validation loss against training FLOPs](img/reproduce_lm.png)",
        "<!-- reproduce_lm: end -->",
    ]
    replace_section(os.path.join(ROOT, "docs", "reproduction.md"), "reproduce_lm", body)


def replace_section(path: str, marker: str, body: list[str]) -> None:
    """Put ``body`` (lines from ``<!-- marker: begin`` to ``<!-- marker: end -->``) in place of
    that section of ``path``, or append it."""
    with open(path) as fh:
        text = fh.read()
    a, b = f"<!-- {marker}: begin", f"<!-- {marker}: end -->"
    if a in text:
        text = text[: text.index(a)] + "\n".join(body) + text[text.index(b) + len(b) :]
    else:
        text += "\n" + "\n".join(body) + "\n"
    with open(path, "w") as fh:
        fh.write(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny CPU slice (smoke test)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2000, help="N, the from-scratch run's steps")
    p.add_argument("--d", type=int, default=64, help="teacher width (student: 2x)")
    p.add_argument("--layers", type=int, default=2, help="teacher depth (student: 2x)")
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--head-dim", type=int, default=32, help="heads grow, their size stays")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lrs", default="1e-3,2e-3,4e-3,8e-3", help="peak LRs tried for scratch")
    p.add_argument(
        "--student-frac",
        type=float,
        default=1.0,
        help="student steps as a fraction of N (default 1: as many as scratch)",
    )
    p.add_argument("--out", default="fxgrow-reproduce-lm-out")
    p.add_argument("--from", dest="from_", help="results.json of an earlier run")
    p.add_argument("--docs", action="store_true", help="write the table and plot into docs/")
    p.add_argument("--extra", nargs="*", help="with --from: per-seed partial results")
    p.add_argument(
        "--workers", type=int, default=1, help="processes (LR candidates, then seeds, in parallel)"
    )
    a = p.parse_args(argv)
    if a.from_:
        with open(a.from_) as fh:
            doc = json.load(fh)
        for extra in a.extra or []:  # per-seed partial results of a run cut short
            with open(extra) as fh:
                part = json.load(fh)
            if part["seed"] not in [r["seed"] for r in doc["results"]]:
                doc["results"].append(part)
        keys = set.intersection(*(set(r["runs"]) for r in doc["results"]))
        for r in doc["results"]:
            r["runs"] = {k: v for k, v in r["runs"].items() if k in keys}
        print("\n".join(summarise(doc["results"], doc["cfg"])))
        if a.docs:
            write_docs(doc["results"], doc["cfg"], doc["meta"])
        return 0
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = dict(
        d=a.d,
        layers=a.layers,
        ctx=a.ctx,
        batch=a.batch,
        N=a.steps,
        device=dev,
        head_dim=a.head_dim,
        student_frac=a.student_frac,
        eval_every=max(1, a.steps // 40),
        val_batches=16,
        recipes=list(RECIPES),
        schedules=list(SCHEDULES),
    )
    lrs = [float(x) for x in a.lrs.split(",")]
    seeds = a.seeds
    if a.quick:
        cfg.update(d=32, layers=1, ctx=32, batch=8, N=40, eval_every=10, val_batches=2, head_dim=16)
        lrs, seeds = [3e-3], 1
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    data = stdlib_bytes()
    _log(
        f"{len(data[0]) / 1e6:.1f} MB train, {len(data[1]) / 1e6:.2f} MB validation "
        f"bytes; device {dev}, torch {torch.__version__}, Python {sys.version.split()[0]}"
    )
    meta = {
        "lrs": lrs,
        "device": torch.cuda.get_device_name() if dev == "cuda" else "CPU",
        "train_bytes": len(data[0]),
        "val_bytes": len(data[1]),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    if a.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(a.workers) as pool:
            finals = (
                dict(zip(lrs, pool.map(_tune_job, [(lr, cfg) for lr in lrs])))
                if len(lrs) > 1
                else {lrs[0]: float("nan")}
            )
            lr = min(finals, key=finals.get)
            results = pool.map(_seed_job, [(s, lr, cfg, a.out) for s in range(seeds)])
    else:
        finals = (
            {lr: scratch_final(lr, cfg, data, _log) for lr in lrs}
            if len(lrs) > 1
            else {lrs[0]: float("nan")}
        )
        lr = min(finals, key=finals.get)
        results = [_seed_job((s, lr, cfg, a.out)) for s in range(seeds)]
    meta["lr_finals"] = {str(k): round(v, 4) for k, v in finals.items()}
    meta["seconds"] = time.time() - t0
    with open(os.path.join(a.out, "results.json"), "w") as fh:
        json.dump({"cfg": cfg, "meta": meta, "results": results}, fh)
    print("\n".join(summarise(results, cfg)))
    if a.docs:
        write_docs(results, cfg, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
