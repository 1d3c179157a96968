"""CUDA checks for a lent GPU machine (one prepared run; CI has no GPU).

    PYTHONPATH=. python3 tools/cuda_check.py

1. torchvision resnet18 widened on CUDA (cuDNN's TF32 convolutions on, as by default): the
   calibrated verifier accepts it and reports the teacher's own deviation.
2. A Llama config in bfloat16 on CUDA grown to hidden x1.5 and 4 layers (to_config): the
   student is a LlamaForCausalLM on CUDA; logits against the teacher on fresh inputs with a
   padding mask, greedy generate(use_cache=True) identical.
3. Growth during training on CUDA: AdamW state moved to the student, loss before = after.
Prints one line per check and exits non-zero if any fails."""

from __future__ import annotations

import sys
import traceback

import torch

DEVICE = sys.argv[1] if len(sys.argv) > 1 else "cuda"  # "cpu" for a dry run of the script


def check_resnet() -> str:
    import torchvision

    import fxgrow

    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10).to(DEVICE).eval()
    x = torch.randn(4, 3, 64, 64, device=DEVICE)
    s = fxgrow.widen(m, x, factor=1.5)
    err = getattr(fxgrow.growth_record(s), "error", None)
    return f"resnet18 x1.5 on CUDA verified: {err}"


def check_llama_bf16() -> str:
    import transformers

    import fxgrow

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        torch_dtype="bfloat16",
    )
    t = transformers.LlamaForCausalLM(cfg).to(DEVICE, torch.bfloat16).eval()
    ids = torch.randint(0, 256, (2, 12), device=DEVICE)
    s = fxgrow.grow(
        t,
        ids,
        to_config={
            "hidden_size": 192,
            "num_attention_heads": 6,
            "num_key_value_heads": 3,
            "num_hidden_layers": 4,
        },
    )
    assert type(s) is transformers.LlamaForCausalLM, type(s)
    assert s.config.hidden_size == 192 and s.config.num_hidden_layers == 4
    assert next(s.parameters()).device.type == DEVICE
    assert next(s.parameters()).dtype == torch.bfloat16
    fresh = torch.randint(0, 256, (3, 9), device=DEVICE)
    mask = torch.ones_like(fresh)
    mask[0, :3] = 0
    with torch.no_grad():
        a = t(fresh, attention_mask=mask).logits.float()
        b = s(fresh, attention_mask=mask).logits.float()
    keep = mask.bool()
    rel = ((a - b)[keep].abs().max() / a[keep].abs().max()).item()
    ga = t.generate(fresh[1:], max_new_tokens=8, do_sample=False)
    gb = s.generate(fresh[1:], max_new_tokens=8, do_sample=False)
    same = torch.equal(ga, gb)
    return (
        f"Llama bf16 on CUDA -> hidden 192, 4 layers: max rel logit err {rel:.2e} on fresh "
        f"inputs with padding; greedy generate identical: {same}"
    )


def check_training() -> str:
    import torchvision

    import fxgrow

    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10).to(DEVICE).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randn(8, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (8,), device=DEVICE)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(m(x), y).item()
    s, opt2 = fxgrow.grow_during_training(m, opt, x, width=1.5)
    s.eval()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(s(x), y).item()
    devices = {
        v.device.type
        for st in opt2.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor) and v.dim()
    }
    return f"growth during training on CUDA: loss {before:.6f} -> {after:.6f}, state on {devices}"


def main() -> int:
    print(
        torch.__version__, torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE, flush=True
    )
    failed = 0
    for check in (check_resnet, check_llama_bf16, check_training):
        try:
            print("ok  ", check(), flush=True)
        except Exception:
            failed += 1
            print("FAIL", check.__name__, flush=True)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
