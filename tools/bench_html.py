"""Benchmark: the interactive HTML view of a 32-layer Llama config (and DenseNet-201) in
headless Chromium.  Measures the time to write the page, its size, the time the browser takes
to load it, and how long a search and a group highlight take inside the page (performance.now
around the page's own handlers, median of 5).

    .venv/bin/python tools/bench_html.py [--layers 32] [--out out/bench_html]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def llama(layers: int):
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_cache=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval(), torch.randint(0, 128, (1, 8))


def densenet201():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.densenet201().eval(), torch.randn(1, 3, 32, 32)


def measure(driver, path: Path, queries: list[str]) -> dict:
    t0 = time.perf_counter()
    driver.get(path.as_uri())
    load = time.perf_counter() - t0
    searches, selects = [], []
    for _ in range(5):
        for q in queries:
            searches.append(
                driver.execute_script(
                    "const t = performance.now(); fxgrow.find(arguments[0]); "
                    "return performance.now() - t;",
                    q,
                )
            )
        selects.append(
            driver.execute_script(
                "const t = performance.now(); fxgrow.select(fxgrow.data.groups.length - 1, true); "
                "return performance.now() - t;"
            )
        )
    # a search as a user makes it, measured from the outside (round trip included)
    t0 = time.perf_counter()
    driver.execute_script("fxgrow.find(arguments[0])", queries[-1])
    outside = time.perf_counter() - t0
    return {
        "load_s": load,
        "search_ms": statistics.median(searches),
        "select_ms": statistics.median(selects),
        "search_roundtrip_s": outside,
    }


def main() -> None:
    from browser import available, chrome

    import fxgrow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--out", default="out/bench_html")
    ap.add_argument("--skip-densenet", action="store_true")
    args = ap.parse_args()
    why = available()
    if why:
        raise SystemExit(f"no browser: {why}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cases = [
        (
            f"llama-{args.layers}-layers",
            *llama(args.layers),
            ["model.layers.17.mlp.gate_proj", "model.layers.30"],
        )
    ]
    if not args.skip_densenet:
        cases.append(
            ("densenet201", *densenet201(), ["features.denseblock3.denselayer20", "features.norm5"])
        )
    driver = chrome(Path(tempfile.mkdtemp()))
    try:
        for name, model, x, queries in cases:
            path = out / f"{name}.html"
            t0 = time.perf_counter()
            fxgrow.draw(model, x, path)
            write = time.perf_counter() - t0
            r = measure(driver, path, queries)
            print(
                f"{name}: page written in {write:.1f} s, {path.stat().st_size / 1e6:.1f} MB; "
                f"browser load {r['load_s']:.2f} s; search {r['search_ms']:.1f} ms, "
                f"highlight {r['select_ms']:.1f} ms (in the page), search round trip "
                f"{r['search_roundtrip_s'] * 1e3:.0f} ms"
            )
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
