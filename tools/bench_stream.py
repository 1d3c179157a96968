"""Benchmark of streamed checkpoint growth (not a test).

Writes a checkpoint with random weights in the shapes of TinyLlama-1.1B (or Llama-2-7B with
``--model 7b``), bfloat16, in 1 GB shards, tensor by tensor (the model is never built), then
in the same run:

* the I/O bound: a plain read + write of the same shards (8 MB chunks), in a subprocess;
  with ``--repeat N`` the bound and the growths run in turn N times and each is reported by
  its median wall time, with every round's (a shared machine's I/O varies from run to run);
* growth by depth (LLaMA-Pro, +25 % blocks, interleaved) and by MLP width (x1.5), each with
  ``fxgrow.stream.grow_checkpoint`` (or, with ``--cli``, ``fxgrow grow SRC -o OUT --stream``)
  in a subprocess, layer-streamed verification on (off with ``--no-verify``); each output is
  removed once measured (unless ``--keep`` or ``--exact``), so the disk holds the teacher and
  one output at a time;
* peak RSS of each subprocess (``ru_maxrss`` from ``wait4``) and its wall time; each run
  starts after ``sync`` (no dirty pages of the run before waiting to be written);
* exactness (``--exact``): teacher and grown student loaded with ``from_pretrained`` in float32,
  one after the other, logits on a few tokens compared.

    .venv/bin/python tools/bench_stream.py --dir /tmp/fxgrow-bench [--model 7b] [--exact] [--cli]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {
    "1.1b": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    ),
    "7b": dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    ),
}


def write_teacher(folder: Path, name: str) -> None:
    """A random bfloat16 Llama checkpoint in 1 GB shards, one tensor in memory at a time."""
    import torch
    import transformers

    from fxgrow.stream.hf import meta_model
    from fxgrow.stream.writer import OutTensor, shard, write_index, write_tensor

    config = transformers.LlamaConfig(
        **SHAPES[name],
        dtype="bfloat16",
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    model = meta_model(config)
    specs = [
        OutTensor(n, "BF16", tuple(p.shape))
        for n, p in model.state_dict().items()
        if "rotary" not in n
    ]
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for s in shard(specs, 1_000_000_000):
        with open(folder / s.file, "wb") as out:
            out.write(s.header())
            for spec in s.tensors:
                if spec.name.endswith("norm.weight"):
                    t = 1 + 0.1 * torch.randn(spec.shape, generator=g)
                else:
                    t = 0.02 * torch.randn(spec.shape, generator=g)
                write_tensor(out, t.to(torch.bfloat16), spec)
    write_index(folder, shard(specs, 1_000_000_000))
    config.save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))


CLI = """
import sys
from fxgrow.cli import main
sys.exit(main({argv!r}))
"""


def measured(code: str) -> dict:
    """Run ``code`` in a fresh interpreter under ``/usr/bin/time -v``: wall seconds, peak RSS
    (MB; measured by time's own wait4 on a child it forks, so none of this process's memory is
    counted), CPU seconds (user + system), the 1-minute load average at the end, and the
    JSON the code prints last."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    start = time.perf_counter()
    p = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-c", code], capture_output=True, env=env, text=True
    )
    wall = time.perf_counter() - start
    if p.returncode:
        raise SystemExit(
            f"subprocess failed ({p.returncode}):\n{code}\n{p.stdout}\n{p.stderr[-3000:]}"
        )
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    cpu = sum(
        float(re.search(rf"{k} time \(seconds\): ([\d.]+)", p.stderr).group(1))
        for k in ("User", "System")
    )
    out = p.stdout.strip()
    last = out.splitlines()[-1] if out else ""
    result = json.loads(last) if last.startswith("{") else {"printed": last} if last else {}
    load = Path("/proc/loadavg").read_text().split()[0]
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load": float(load),
        "peak_rss_mb": round(rss / 1024),
        **result,
    }


COPY = """
import json, pathlib
src, dst = pathlib.Path({src!r}), pathlib.Path({dst!r})
dst.mkdir()
buf = bytearray(8 << 20); view = memoryview(buf); total = 0
for f in sorted(src.glob("*.safetensors")):
    with open(f, "rb") as i, open(dst / f.name, "wb") as o:
        while n := i.readinto(view):
            o.write(view[:n]); total += n
print(json.dumps({{"bytes": total}}))
"""

GROW = """
import json, time
from fxgrow.stream import grow_checkpoint
r = grow_checkpoint({src!r}, {dst!r}, progress=False, max_shard_size="1GB", **{kw!r})
print(json.dumps({{"bytes": r.bytes_written, "plan_s": round(r.plan_seconds, 1),
                  "write_s": round(r.write_seconds, 1), "verify_s": round(r.verify_seconds, 1),
                  **({{"max_abs_err": r.check.max_abs, "max_rel_err": r.check.max_rel,
                     "verify_peak_weights_mb": round(max(r.check.teacher_peak_bytes,
                                                         r.check.student_peak_bytes) / 1e6)}}
                     if r.check else {{"verified": False}})}}))
"""

EXACT = """
import json, torch, transformers
ids = torch.randint(0, 32000, (2, 6), generator=torch.Generator().manual_seed(1))
def logits(path):
    m = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(ids).logits
t = logits({src!r}); s = logits({dst!r})
print(json.dumps({{"max_abs_err": float((s - t).abs().max()),
                  "max_rel_err": float((s - t).abs().max() / t.abs().max())}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/fxgrow-bench")
    ap.add_argument("--model", choices=sorted(SHAPES), default="1.1b")
    ap.add_argument("--exact", action="store_true", help="from_pretrained float32 check")
    ap.add_argument("--keep", action="store_true", help="keep the folders")
    ap.add_argument(
        "--no-verify", action="store_true", help="grow without the layer-streamed verification"
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds of bound, depth, width (medians reported)"
    )
    ap.add_argument(
        "--cli",
        action="store_true",
        help="grow with `fxgrow grow SRC -o OUT --stream ...` instead of the API",
    )
    args = ap.parse_args()
    root = Path(args.dir) / args.model
    teacher = root / "teacher"
    if not teacher.exists():
        t = time.perf_counter()
        write_teacher(teacher, args.model)
        print(f"teacher written in {time.perf_counter() - t:.0f} s", flush=True)
    n = SHAPES[args.model]["num_hidden_layers"]
    mlp = SHAPES[args.model]["intermediate_size"]
    depth, width = -(-n * 5 // 4), mlp * 3 // 2
    up = "model.layers.*.mlp.up_proj"
    no_verify = ["--no-verify"] if args.no_verify else []
    off = {"verify": False} if args.no_verify else {}
    if args.cli:
        grow = {
            "depth": CLI.format(
                argv=[
                    "grow",
                    str(teacher),
                    "-o",
                    str(root / "depth"),
                    "--stream",
                    "--blocks",
                    f"model.layers={depth}",
                    "--max-shard-size",
                    "1GB",
                    *no_verify,
                ]
            ),
            "width": CLI.format(
                argv=[
                    "grow",
                    str(teacher),
                    "-o",
                    str(root / "width"),
                    "--stream",
                    "--width",
                    f"{up}={width}",
                    "--max-shard-size",
                    "1GB",
                    *no_verify,
                ]
            ),
        }
    else:
        grow = {
            "depth": GROW.format(
                src=str(teacher), dst=str(root / "depth"), kw={"blocks": depth, **off}
            ),
            "width": GROW.format(
                src=str(teacher), dst=str(root / "width"), kw={"widths": {up: width}, **off}
            ),
        }
    bound = "read+write (I/O bound)"
    runs = {
        ("copy", bound): COPY.format(src=str(teacher), dst=str(root / "copy")),
        ("depth", f"depth {n}->{depth} (LLaMA-Pro)"): grow["depth"],
        ("width", f"MLP width {mlp}->{width}"): grow["width"],
    }
    keep = args.keep or args.exact  # else each output is removed once measured (disk)
    rounds: dict[str, list[dict]] = {name: [] for _, name in runs}
    for r in range(args.repeat):  # the bound and the growths in turn: the machine's I/O varies
        for (d, name), code in runs.items():
            shutil.rmtree(root / d, ignore_errors=True)
            os.sync()  # each run starts with no dirty pages of the one before to write
            rounds[name].append(measured(code))
            if not keep:
                shutil.rmtree(root / d, ignore_errors=True)
            print(f"round {r + 1}", name, json.dumps(rounds[name][-1]), flush=True)
    results = {}
    for name, got in rounds.items():  # the run of median wall time, with every round's walls
        walls = [x["wall_s"] for x in got]
        results[name] = {**sorted(got, key=lambda x: x["wall_s"])[len(got) // 2], "walls": walls}
    for name in results:
        results[name]["x_bound"] = round(results[name]["wall_s"] / results[bound]["wall_s"], 2)
    if args.exact:
        for d in ("depth", "width"):
            results[f"exact {d}"] = measured(EXACT.format(src=str(teacher), dst=str(root / d)))
            print(f"exact {d}", json.dumps(results[f"exact {d}"]), flush=True)
    teacher_bytes = sum(f.stat().st_size for f in teacher.glob("*.safetensors"))
    print(
        json.dumps(
            {"model": args.model, "teacher_gb": round(teacher_bytes / 1e9, 2), **results}, indent=1
        )
    )
    if not args.keep:
        for d in ("copy", "depth", "width"):
            shutil.rmtree(root / d, ignore_errors=True)


if __name__ == "__main__":
    main()
