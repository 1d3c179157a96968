"""Regenerate the README's pictures of the interactive HTML view: a ResNet-50 grown x1.5 with
one group highlighted, and a Llama config grown from 2 to 4 layers with a new layer found, as
headless Chromium shows them.

    .venv/bin/python tools/html_pictures.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    import torchvision
    import transformers
    from browser import available, chrome

    import fxgrow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    if available():
        raise SystemExit(f"no browser: {available()}")
    out = Path(args.out).resolve()
    work = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    r50 = torchvision.models.resnet50().eval()
    fxgrow.draw(r50, x, work / "resnet50.html", student=fxgrow.widen(r50, x, factor=1.5))
    cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_cache=False,
    )
    llama = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 128, (1, 8))
    grown = fxgrow.grow(llama, ids, blocks={"model.layers": 4}, as_graph=True)
    fxgrow.draw(llama, ids, work / "llama.html", student=grown)
    driver = chrome(work / "chromium")
    try:
        driver.get((work / "resnet50.html").as_uri())
        driver.execute_script("fxgrow.show('student'); fxgrow.find('layer3.0.conv3')")
        driver.save_screenshot(str(out / "html_resnet50.png"))
        driver.get((work / "llama.html").as_uri())
        driver.execute_script(
            "fxgrow.show('student/model.layers.2'); fxgrow.find('model.layers.2.mlp.gate_proj')"
        )
        driver.save_screenshot(str(out / "html_llama.png"))
    finally:
        driver.quit()
    print(f"wrote {out / 'html_resnet50.png'} and {out / 'html_llama.png'}")


if __name__ == "__main__":
    main()
