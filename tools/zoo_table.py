#!/usr/bin/env python
"""Regenerate docs/zoo.md: fxgrow on a zoo of classifiers (groups, widening, exactness).

For every model spec: random init (``torch.manual_seed(0)``), eval mode, a small input.  The
script runs ``fxgrow.analyze``, ``fxgrow.plan(analysis, factor=1.5)`` and
``fxgrow.widen(model, x, factor=1.5, verify=False)``, then ``fxgrow.compare`` in float32 and
again on a float64 copy of the model and input (widened separately).

    .venv/bin/python tools/zoo_table.py                       # all models -> docs/zoo.md
    .venv/bin/python tools/zoo_table.py --models resnet18,alexnet --out /tmp/zoo.md

More families (timm, Hugging Face, ...) are added as further ``ModelSpec`` entries in
``SPECS``: a name, a factory returning a module and a function returning example inputs.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxgrow

FACTOR = 1.5
BATCH = 2
SIZE = 64
DEFAULT_OUT = ROOT / "docs" / "zoo.md"
COMMAND = "python tools/zoo_table.py"
SIGNAL_FLOOR = 1e-3  # below this, the output is (almost) independent of the input


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry.  ``factory`` builds the model (weights random, seeded by the caller);
    ``inputs`` builds the example inputs (a tensor or a tuple of positional inputs)."""

    name: str
    family: str
    factory: Callable[[], torch.nn.Module]
    inputs: Callable[[], Any]
    note: str = ""
    options: tuple = ()  # extra (key, value) options for fxgrow.analyze / widen


def _image(size: int = SIZE, batch: int = BATCH) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(batch, 3, size, size)


def _torchvision(name: str, size: int = SIZE, **kwargs: Any) -> ModelSpec:
    def build() -> torch.nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, **kwargs)

    note = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return ModelSpec(name, "torchvision", build, _image(size), note)


NO_AUX = {"aux_logits": False, "init_weights": False}

SPECS: list[ModelSpec] = [
    _torchvision("resnet18"),
    _torchvision("resnet50"),
    _torchvision("resnext50_32x4d"),
    _torchvision("wide_resnet50_2"),
    _torchvision("vgg11_bn"),
    _torchvision("alexnet"),
    _torchvision("densenet121"),
    _torchvision("googlenet", **NO_AUX),
    _torchvision("inception_v3", size=80, **NO_AUX),  # needs >= 75x75
    _torchvision("mobilenet_v2"),
    _torchvision("mobilenet_v3_small"),
    _torchvision("efficientnet_b0"),
    _torchvision("regnet_y_400mf"),
    _torchvision("mnasnet0_5"),
    _torchvision("squeezenet1_0"),
    _torchvision("shufflenet_v2_x0_5"),
    ModelSpec(
        "vit_b_16",
        "torchvision",
        lambda: _random_head(__import__("torchvision").models.vit_b_16(image_size=32)),
        _image(32),
        "image_size=32; its zero-initialised head re-drawn at random",
    ),
    _torchvision("swin_t"),
    _torchvision("convnext_tiny"),
]


def _random_head(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision's ViT starts with a zero head (constant output): draw it at random so the
    comparison measures something."""
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.02)
    return model


def _timm(name: str, size: int = SIZE, **kwargs: Any) -> ModelSpec:
    def build() -> torch.nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    note = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return ModelSpec(name, "timm", build, _image(size), note)


def _hf(
    arch: str, inputs: Callable[[], Any], grow_outputs: bool = False, **config: Any
) -> ModelSpec:
    def build() -> torch.nn.Module:
        import transformers

        cls = getattr(transformers, arch)
        cfg = cls.config_class(**config)
        if hasattr(cfg, "use_cache"):
            cfg.use_cache = False
        return cls(cfg)

    note = ", ".join(f"{k}={v}" for k, v in config.items())
    options = (("outputs", "grow"),) if grow_outputs else ()
    return ModelSpec(
        arch,
        "hugging face",
        build,
        inputs,
        note + ("; outputs grow" if grow_outputs else ""),
        options,
    )


def _ids(batch: int = BATCH, length: int = 8, vocab: int = 100) -> Callable[[], torch.Tensor]:
    return lambda: torch.randint(0, vocab, (batch, length))


_TINY = dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
SPECS += [
    _timm("vit_tiny_patch16_224", size=32, img_size=32),
    _timm("deit_tiny_patch16_224", size=32, img_size=32),
    _timm("convnext_atto"),
    _timm("efficientnet_b0"),
    _hf("GPT2LMHeadModel", _ids(), n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64),
    _hf("LlamaForCausalLM", _ids(), hidden_size=32, num_key_value_heads=2, vocab_size=100, **_TINY),
    _hf("BertModel", _ids(), True, hidden_size=32, vocab_size=100, **_TINY),
    _hf("ViTModel", _image(32), True, hidden_size=32, image_size=32, patch_size=8, **_TINY),
]


@dataclass
class Row:
    spec: ModelSpec
    input_shapes: str = ""
    groups: int = 0
    widened: int = 0
    fixed: int = 0
    blocked: list[str] = field(default_factory=list)  # names of non-fixed blocked groups
    reasons: dict[str, list[str]] = field(default_factory=dict)  # reason -> blocking nodes
    unchanged_widenable: list[str] = field(default_factory=list)
    err32: float | None = None
    err64: float | None = None
    signal: float | None = None  # max|t(x) - t(x')| / max|t(x)|, fp64
    err64_nobias: float | None = None  # fp64 error with the last Linear's bias zeroed
    params_before: int = 0
    params_after: int = 0
    seconds: float = 0.0
    error: str = ""


def _leaves(out: Any) -> list[torch.Tensor]:
    from torch.utils import _pytree as pytree

    return [
        t.double() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.numel()
    ]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else tuple(x) if isinstance(x, list) else (x,)


def _to_double(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.double() if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(_to_double(v) for v in x)
    return x


def _shapes(x: Any) -> str:
    return ", ".join(
        "x".join(str(d) for d in t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        for t in _as_tuple(x)
    )


def measure(spec: ModelSpec) -> Row:
    row = Row(spec)
    t0 = time.perf_counter()
    stage = "build"
    try:
        torch.manual_seed(0)
        model = spec.factory().eval()
        x = spec.inputs()
        row.input_shapes = _shapes(x)
        row.params_before = _count(model)

        stage = "analyze"
        options = dict(spec.options)
        analysis = fxgrow.analyze(model, x, **options)
        row.groups = len(analysis.groups)
        stage = "plan"
        plan = fxgrow.plan(analysis, factor=FACTOR)
        row.widened = len(plan.changes)
        changed = {c.group for c in plan.changes}
        for g in analysis.groups:
            if g.fixed:
                row.fixed += 1
            elif g.blockers:
                row.blocked.append(g.name)
                for b in g.blockers:
                    nodes = row.reasons.setdefault(b.reason, [])
                    if b.node not in nodes:
                        nodes.append(b.node)
            elif g.name not in changed:
                row.unchanged_widenable.append(g.name)

        stage = "widen fp32"
        student = fxgrow.widen(model, x, factor=FACTOR, verify=False, **options)
        row.params_after = _count(student)
        stage = "compare fp32"
        row.err32 = fxgrow.compare(model, student, x).max_rel
        del student

        stage = "widen fp64"
        model64, x64 = copy.deepcopy(model).double(), _to_double(x)
        student64 = fxgrow.widen(model64, x64, factor=FACTOR, verify=False, **options)
        stage = "compare fp64"
        row.err64 = fxgrow.compare(model64, student64, x64).max_rel

        # At random init some models' outputs barely depend on the input (activations decay
        # with depth, the logits are the classifier's bias); max|t| then measures the bias
        # and the error says little.  Flag them and measure again without that bias.
        stage = "signal check"
        x64b = _to_double(spec.inputs())
        with torch.no_grad():
            t1, t2 = (_leaves(model64(*_as_tuple(v))) for v in (x64, x64b))
        scale = max(float(t.abs().max()) for t in t1) or float("inf")
        row.signal = max(float((a - b).abs().max()) for a, b in zip(t1, t2)) / scale
        last = [m for m in model64.modules() if isinstance(m, torch.nn.Linear)]
        if row.signal < SIGNAL_FLOOR and last and last[-1].bias is not None:
            stage = "widen fp64 without final bias"
            with torch.no_grad():
                last[-1].bias.zero_()
            student64 = fxgrow.widen(model64, x64, factor=FACTOR, verify=False, **options)
            row.err64_nobias = fxgrow.compare(model64, student64, x64).max_rel
    except Exception as e:  # one failing model must not lose the table
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        row.error = f"{stage}: {type(e).__name__}: {msg}"
        traceback.print_exc(file=sys.stderr)
    row.seconds = time.perf_counter() - t0
    return row


def _err(v: float | None) -> str:
    return "—" if v is None else "0" if v == 0 else f"{v:.1e}"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render(rows: list[Row], elapsed: float) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        "# Model zoo",
        "",
        "What fxgrow does to standard classifiers.  For each model: random initialisation "
        "(`torch.manual_seed(0)`), eval mode, example input of batch "
        f"{BATCH} at {SIZE}x{SIZE} (inception_v3: 80x80, as it needs at least 75x75; "
        "googlenet and inception_v3 without auxiliary heads).  The script runs "
        "`fxgrow.analyze(model, x)`, `fxgrow.plan(analysis, factor=1.5)` and "
        "`fxgrow.widen(model, x, factor=1.5, verify=False)`, then compares teacher and "
        "student with `fxgrow.compare` in float32, and again with a float64 copy of the "
        "model and input (`model.double()`, `x.double()`, widened separately).",
        "",
        "* **groups found**: `len(analysis.groups)` (channel groups; classes tied only to "
        "spatial or other non-channel axes are not counted).",
        "* **groups widened**: `len(plan.changes)` for `factor=1.5`.",
        "* **not widened**: the number of *fixed* groups (they reach the model's input or "
        "output, whose widths are part of its interface), then any other blocked group with "
        "the node and reason that blocks it.",
        "* **max rel err**: `max|s - t| / max|t|` over all output elements, `s` the student's "
        "and `t` the teacher's output (computed in float64 from the outputs).  Net2WiderNet is "
        "exact in real arithmetic, so this is rounding only: around float32 epsilon (1e-7) "
        "and float64 epsilon (1e-16) times the depth.",
        "* **parameters**: `sum(p.numel())` of teacher -> student.",
        "",
        f"Regenerate with `{COMMAND}` (this run: {max(1, round(elapsed / 10) * 10):.0f} s "
        f"with {torch.get_num_threads()} torch thread(s) on {os.cpu_count()} CPUs; "
        "`--models a,b` for a subset, `--out PATH` to write elsewhere, `--threads N`; the "
        "float32 errors depend slightly on the thread count, through the order of sums).",
        "",
        f"Generated {today} with torch {torch.__version__}"
        + (f", torchvision {_tv_version()}" if _tv_version() else "")
        + f", Python {platform.python_version()}.",
        "",
        "| model | input | groups found | groups widened | not widened (why) "
        "| max rel err fp32 | max rel err fp64 | parameters before -> after |",
        "|---|---|--:|--:|---|--:|--:|---|",
    ]
    for r in rows:
        if r.error and r.err32 is None:
            lines.append(
                f"| {r.spec.name} | {r.input_shapes} | {r.groups or '—'} | "
                f"{r.widened or '—'} | **failed** — {_md(r.error)} | — | — | "
                f"{r.params_before:,} -> — |"
            )
            continue
        why = [f"{r.fixed} fixed (boundary)"]
        if r.blocked:
            why.append(f"{len(r.blocked)} blocked: {_md(_by_module(r.blocked))}")
            by = "; ".join(f"{_by_module(n)}: {reason}" for reason, n in r.reasons.items())
            why.append(f"blocked by {_md(by)}")
        why += [
            f"inner factor, not grown by factor= (e.g. a value head dim): {_md(n)}"
            for n in r.unchanged_widenable
        ]
        if r.error:
            why.append(f"**{_md(r.error)}**")
        mark = " †" if r.signal is not None and r.signal < SIGNAL_FLOOR else ""
        ratio = r.params_after / r.params_before if r.params_before else float("nan")
        lines.append(
            f"| {r.spec.name} | {r.input_shapes} | {r.groups} | {r.widened} | "
            f"{'<br>'.join(why)} | {_err(r.err32)}{mark} | {_err(r.err64)}{mark} | "
            f"{r.params_before:,} -> {r.params_after:,} ({ratio:.2f}x) |"
        )
    if any(r.spec.name.startswith("shufflenet") and r.blocked for r in rows):
        lines += [
            "",
            "**shufflenet_v2_x0_5: no exact widening of stage3's trunk.**  "
            "Each unit chunks the channel-shuffled tensor in two and passes one half on; a "
            "shuffle interleaves the two halves of the concatenation.  fxgrow keeps the "
            "interleaved parts' own maps (a *Zip* layout) and follows every chunk as a "
            "round-robin cut, which splits the branches' channels into pieces that must grow "
            "alike.  Stage3 has 7 such chunks over 48 = 3 x 16 channels per half: the cuts "
            "reach pieces of one unit whose partner in the interleave is empty, so that unit "
            "cannot be replicated without a copy landing on the other side of a chunk, where "
            "no consumer has a column to copy for it; the ties then hold every other piece of "
            "the trunk to its width.  Stage2 and stage4 (3 chunks) widen exactly.  This is "
            "not fxgrow being cautious: with the branches at width w every channel position "
            "meets each chunk on a fixed side, and a Net2Net student exists iff every "
            "position can copy a teacher unit with the same sequence of sides and every unit "
            "is copied; for stage3 (48 channels, 7 chunks) no w from 49 to 192 passes "
            "(`tests/test_rules.py::test_shufflenet_stage3_has_no_net2net_widening`; the "
            "characterisation is checked against a brute-force search on small chains).  "
            "fxgrow's growth ties are sound but not complete: in a few deep chains of odd "
            "widths they miss a student one or two channels wider (5 channels, 3 chunks: "
            'only width 6 exists).  With `init="zero"` and the trunk named in `widths=`, '
            "fresh units placed through the shuffles (each teacher unit kept on its path, the "
            "other positions fresh) grow it exactly, 48 -> 57 channels per half "
            "(`docs/design.md`, `tests/test_shuffle_fresh.py`).",
        ]
    flagged = [r for r in rows if r.signal is not None and r.signal < SIGNAL_FLOOR]
    if flagged:
        lines += [
            "",
            "† At this random initialisation the model's output hardly depends on its input: "
            "activations shrink with depth (PyTorch's default init, no `init_weights`), so the "
            "logits are essentially the classifier's bias, `max|t|` measures that bias, and "
            "the rounding differences of the widened layers mostly vanish below its last "
            "bits.  For these models "
            "the table's error says little; the float64 model was therefore also widened with "
            "its last `Linear`'s bias zeroed (`max|t(x) - t(x')| / max|t|` is the share of "
            "the output that depends on the input, `x'` a second random input):",
            "",
            "| model | input-dependent share of the output | max rel err fp64, last bias zeroed |",
            "|---|--:|--:|",
        ]
        lines += [f"| {r.spec.name} | {r.signal:.1e} | {_err(r.err64_nobias)} |" for r in flagged]
    lines.append("")
    return "\n".join(lines)


def _by_module(names: list[str]) -> str:
    """Group names with the parts of one producer (``conv[0:3]``, ``conv[3:6]``) counted
    together: ``conv (2 parts)``."""
    parts: dict[str, int] = {}
    for n in names:
        base = n.split("[", 1)[0] if n.endswith("]") and "[in]" not in n else n
        parts[base] = parts.get(base, 0) + 1
    return ", ".join(b if k == 1 else f"{b} ({k} parts)" for b, k in parts.items())


def _tv_version() -> str:
    try:
        import torchvision

        return torchvision.__version__
    except ImportError:
        return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", help="comma-separated subset of: " + ", ".join(s.name for s in SPECS)
    )
    ap.add_argument(
        "--out", default=str(DEFAULT_OUT), help="markdown file to write (default docs/zoo.md)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the fp32 errors then do not depend "
        "on the thread count, and shared CPUs do not slow the run down; 0 keeps "
        "torch's default)",
    )
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    specs = SPECS
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        by_name = {s.name: s for s in SPECS}
        unknown = [m for m in wanted if m not in by_name]
        if unknown:
            ap.error(f"unknown model(s): {', '.join(unknown)}")
        specs = [by_name[m] for m in wanted]

    t0 = time.perf_counter()
    rows = []
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {spec.name} ...", file=sys.stderr, flush=True)
        row = measure(spec)
        status = (
            f"FAILED ({row.error})"
            if row.error
            else f"{row.groups} groups, {row.widened} widened, rel err fp32 {_err(row.err32)}, "
            f"fp64 {_err(row.err64)}"
        )
        print(
            f"[{i}/{len(specs)}] {spec.name}: {status} [{row.seconds:.1f} s]",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text() if out.exists() else ""
    marker = "<!-- sweep:begin"  # tools/sweep.py's generated section is kept as it is
    kept = "\n" + old[old.index(marker) :] if marker in old else ""
    out.write_text(render(rows, elapsed).rstrip("\n") + "\n" + kept)
    print(f"wrote {out} ({len(rows)} models, {elapsed:.1f} s)", file=sys.stderr)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
