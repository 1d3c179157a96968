"""The command line's parser: the subcommands, their options and help texts (with examples).

Invariant: building the parser imports no torch (``fxgrow --help`` stays fast)."""

from __future__ import annotations

import argparse

from .commands import cmd_deepen, cmd_draw, cmd_grow, cmd_inspect, cmd_widen
from .within import add_flag as add_within_flag

MODEL_HELP = """\
models:
  torchvision:NAME[?k=v]        e.g. torchvision:resnet18, torchvision:resnet50?num_classes=10
  timm:NAME[?k=v]               e.g. timm:resnet50d, timm:vit_tiny_patch16_224?img_size=64
  hf:CLASS?CONFIG               a transformers model class built from its config with random
                                weights and use_cache=False, e.g.
                                'hf:LlamaForCausalLM?hidden_size=64&num_hidden_layers=2'
  path/to/file.py:FACTORY[?k=v] a function (or module object) in a Python file
  FILE.safetensors              a model saved by fxgrow (fxgrow widen ... -o FILE)
  Models are randomly initialised (nothing is downloaded); --seed fixes weights and inputs.

inputs:
  --input-shape 1,3,224,224     random normal input of that shape (repeat for more inputs)
  --input-ids 2,16              random token ids, batch x length (language models)
  defaults: 1,3,224,224 (torchvision), the model's input size (timm), ids 2,16 (hf),
  the recorded shapes (saved files)

exit status: 0 ok, 2 user error (one line on stderr), 1 internal error"""

EPILOG = f"""\
examples:
  fxgrow inspect torchvision:resnet18 --input-shape 1,3,64,64
  fxgrow widen torchvision:resnet18 --factor 1.5 -o wide.safetensors
  fxgrow widen timm:resnet50d --width layer1.0.conv1=96 --input-shape 1,3,64,64
  fxgrow deepen torchvision:resnet18 --after layer1.0.relu --kind residual
  fxgrow grow torchvision:resnet18 --blocks layer1=3 --factor 1.5 -o grown.safetensors
  fxgrow grow 'hf:LlamaForCausalLM?hidden_size=64&intermediate_size=128&num_hidden_layers=2' \\
      --blocks model.layers=4 --input-ids 2,16
  fxgrow draw torchvision:resnet50 -o resnet50.svg
  fxgrow draw torchvision:resnet18 --factor 1.5 --blocks layer1=3 -o before_after.png

{MODEL_HELP}"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="the model: torchvision:NAME, timm:NAME, hf:CLASS?config, "
        "file.py:factory or a saved .safetensors (see below)",
    )
    g = p.add_argument_group("model and inputs")
    g.add_argument(
        "--input-shape",
        action="append",
        metavar="N,C,H,W",
        help="shape of a random float input (repeat for several inputs)",
    )
    g.add_argument(
        "--input-ids",
        metavar="B,T",
        help="random token ids of batch B and length T (language models)",
    )
    g.add_argument(
        "--vocab",
        type=int,
        help="token ids are drawn below this (default: the model's config.vocab_size)",
    )
    g.add_argument("--dtype", help="run the model in this floating dtype (e.g. float64)")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for weights, inputs and replication maps (default 0)",
    )
    g.add_argument(
        "--frontend",
        choices=("auto", "fx", "export"),
        default="auto",
        help="graph capture: fx tracing, torch.export, or fx then export (default)",
    )
    g.add_argument(
        "--leaf",
        action="append",
        metavar="MODULE",
        help="keep this module (qualified name) as one opaque call when tracing",
    )
    g.add_argument("--allow-large", action="store_true", help="build hf: models over 2B parameters")
    g.add_argument(
        "--trust",
        action="append",
        metavar="NAME",
        help="let a saved .safetensors file use this function, method or module "
        "class (qualified name, or a package prefix) beyond fxgrow's allowlist; "
        "only for files from a source you would take code from",
    )
    o = p.add_argument_group("output")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    o.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show what libraries print (warnings, torch logs)",
    )
    o.add_argument(
        "--traceback", action="store_true", help="print the Python traceback of internal errors"
    )


def _growth(p: argparse.ArgumentParser, blocks: bool) -> None:
    g = p.add_argument_group("growth")
    g.add_argument(
        "--factor",
        type=float,
        metavar="F",
        help="widen every widenable group by F (rounded up to what each allows)",
    )
    g.add_argument(
        "--width",
        action="append",
        metavar="GROUP=N",
        help="new width of one group, named by group or module (repeatable; "
        "overrides --factor for that group)",
    )
    g.add_argument(
        "--split",
        choices=("equal", "random"),
        default="equal",
        help="how a replicated unit's outgoing weights are shared among its copies: "
        "equally (Net2Net) or by random shares summing to one (exact too, and "
        "the copies learn apart)",
    )
    g.add_argument(
        "--init",
        choices=("replicate", "zero", "gradmax"),
        default="replicate",
        help="how new units start: copies of old ones (Net2Net), or a fresh random "
        "fan-in and a zero fan-out (exact; normalised groups still replicate); "
        'gradmax needs a loss and a batch: use fxgrow.widen(init="gradmax", '
        "loss_fn=..., batch=...) from Python",
    )
    g.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="X",
        help="add the paper's noise to the copies (relative scale; not exact: the "
        "error is reported, not checked)",
    )
    g.add_argument(
        "--approximate",
        action="store_true",
        help="let normalised groups (LayerNorm/GroupNorm/RMSNorm) grow by non-whole "
        "factors: not exact; the error is reported, not checked",
    )
    g.add_argument(
        "--yes",
        action="store_true",
        help="grow even when the planned student does not fit in available memory",
    )
    if blocks:
        g.add_argument(
            "--blocks",
            action="append",
            metavar="STAGE=N",
            help="new number of blocks in a residual stage (repeatable; see the "
            "stages `fxgrow inspect` lists)",
        )


def _run_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        action="store_true",
        help="for a saved .safetensors model: read its weights and run its graph "
        "on example data where the analysis needs values (by default a "
        "saved file is analysed on meta tensors: its graph never runs on data)",
    )


def _results(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE.safetensors",
        help="save the student (loads back with fxgrow.load)",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="report a failed preservation check instead of exiting with status 1",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The ``fxgrow`` argument parser: every subcommand, each with ``func`` set to its handler."""
    from .. import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="fxgrow",
        formatter_class=fmt,
        epilog=EPILOG,
        description="Grow trained PyTorch models without changing what they compute: "
        "Net2Net widening and deepening as torch.fx graph rewrites, verified "
        "against the original.",
    )
    parser.add_argument("--version", action="version", version=f"fxgrow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "inspect",
        formatter_class=fmt,
        help="list a model's channel groups",
        description="Trace a model and list its channel groups: the sets of "
        "channels that must grow together, their widths, how many "
        "tensors they span, and what blocks the ones that cannot "
        "grow.  Also lists residual stages for `grow --blocks`.",
        epilog="examples:\n  fxgrow inspect torchvision:resnet18\n"
        "  fxgrow inspect timm:resnet50d --input-shape 1,3,64,64 --json\n\n" + MODEL_HELP,
    )
    _common(p)
    p.add_argument(
        "--all",
        action="store_true",
        help="also list classes tied to non-channel axes (spatial, kernel)",
    )
    p.add_argument(
        "--outputs",
        choices=("fixed", "grow"),
        default="fixed",
        help="whether the model's output channels may grow (default fixed)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--rank",
        action="store_true",
        help="also rank the widenable groups by the "
        "gradient new units would get (fxgrow.rank_groups; synthetic batch)",
    )
    p.add_argument("--width-limit", type=int, default=72, help=argparse.SUPPRESS)
    add_within_flag(p)
    _run_flag(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "widen",
        formatter_class=fmt,
        help="widen channel groups (Net2WiderNet)",
        description="Widen channel groups by replicating units and dividing "
        "their outgoing weights, then check the student against "
        "the teacher and report the change.",
        epilog="examples:\n  fxgrow widen torchvision:resnet18 --factor 1.5 "
        "-o wide.safetensors\n  fxgrow widen torchvision:resnet18 --width "
        "layer1.0.conv1=96 --width conv1=128\n  fxgrow widen "
        "torchvision:resnet18 --factor 2 --plan-only --json\n\n" + MODEL_HELP,
    )
    _common(p)
    _growth(p, blocks=False)
    p.add_argument(
        "--outputs",
        choices=("fixed", "grow"),
        default="fixed",
        help="let output channel axes widen (encoders; default fixed)",
    )
    p.add_argument("--plan-only", action="store_true", help="print the plan, change nothing")
    add_within_flag(p)
    _results(p)
    p.set_defaults(func=cmd_widen)

    p = sub.add_parser(
        "deepen",
        formatter_class=fmt,
        help="insert identity layers (Net2DeeperNet)",
        description="Insert layers that start as the identity after nodes or "
        "modules (identity / residual), or copy residual blocks "
        "with their last layer zeroed (block).",
        epilog="examples:\n  fxgrow deepen torchvision:resnet18 --after "
        "layer1.0.relu --kind residual\n  fxgrow deepen "
        "torchvision:resnet18 --after layer2.1 --kind block\n\n" + MODEL_HELP,
    )
    _common(p)
    g = p.add_argument_group("deepening")
    g.add_argument(
        "--after",
        action="append",
        required=True,
        metavar="NAME",
        help="node or module to insert after (repeatable or comma-separated)",
    )
    g.add_argument(
        "--kind",
        choices=("identity", "residual", "block"),
        default="identity",
        help="identity layer, residual h + f(h) with f zero, or a copy of a block",
    )
    g.add_argument("--kernel-size", type=int, default=3, help="of inserted convs (default 3)")
    g.add_argument("--batchnorm", action="store_true", help="add an identity BatchNorm")
    g.add_argument("--layer", choices=("linear", "conv"), help="force the inserted layer type")
    g.add_argument(
        "--yes",
        action="store_true",
        help="deepen even when the planned student does not fit in available memory",
    )
    _results(p)
    p.set_defaults(func=cmd_deepen)

    p = sub.add_parser(
        "grow",
        formatter_class=fmt,
        help="add residual blocks and/or widen",
        description="Grow residual stages to more blocks (copies of the last "
        "block, starting as the identity) and/or widen, in one "
        "verified step.",
        epilog="examples:\n  fxgrow grow torchvision:resnet18 --blocks layer1=3 "
        "--blocks layer2=3\n  fxgrow grow torchvision:resnet50 --blocks "
        "layer3=23 --factor 1.25 -o grown.safetensors\n\n" + MODEL_HELP,
    )
    _common(p)
    _growth(p, blocks=True)
    add_within_flag(p)
    _results(p)
    h = p.add_argument_group("Hugging Face folders (MODEL is a folder with a config.json)")
    h.add_argument(
        "--to-config",
        action="append",
        metavar="KEY=VALUE|config.json",
        help="grow to this config (repeat KEY=VALUE, or a target config.json)",
    )
    h.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (5GB)")
    h.add_argument("--untie", action="store_true", help="untie tied embeddings")
    h.add_argument("--overwrite", action="store_true", help="replace an existing -o folder")
    h.add_argument(
        "--stream",
        action="store_true",
        help="grow tensor by tensor from the files, never holding the model in "
        "memory (checkpoints larger than memory; docs/streaming.md)",
    )
    h.add_argument(
        "--placement",
        choices=("interleave", "append"),
        default="interleave",
        help="with --stream and --blocks: copies after evenly spaced blocks "
        "(LLaMA-Pro, default) or at the end",
    )
    p.set_defaults(func=cmd_grow)

    from .growth import add_grow_kernel_parser

    add_grow_kernel_parser(sub, _common, _results, fmt, MODEL_HELP)

    p = sub.add_parser(
        "draw",
        formatter_class=fmt,
        help="draw the graph and its channel groups",
        description="Draw the model's graph with Graphviz: one colour per "
        "channel group on the edges it spans, blockers outlined in "
        "red, modules as clusters.  With growth options (or "
        "--student) draws the student in the teacher's colours, "
        "widened groups labelled old → new and inserted layers "
        "outlined.  .svg/.png/.pdf need Graphviz's `dot`; .dot "
        "writes the source.",
        epilog="examples:\n  fxgrow draw torchvision:resnet50 -o resnet50.svg\n"
        "  fxgrow draw torchvision:densenet121 -o densenet.svg "
        "-o densenet.html\n  fxgrow draw torchvision:resnet18 --factor 1.5 "
        "--blocks layer1=3 -o grown.png\n  fxgrow draw "
        "torchvision:resnet18 --student wide.safetensors -o wide.svg\n\n" + MODEL_HELP,
    )
    _common(p)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="FILE.svg, .png, .pdf (Graphviz) or .dot (DOT text)",
    )
    _growth(p, blocks=True)
    p.add_argument(
        "--student",
        metavar="FILE.safetensors",
        help="draw this saved student of the model (before/after view)",
    )
    p.add_argument(
        "--collapse",
        default="auto",
        metavar="auto|none|DEPTH|PATTERNS",
        help="fold modules into boxes: auto (default: only large graphs), none, a "
        "module depth (2: layer1.0), or comma-separated module paths / globs "
        "('layer*.*')",
    )
    p.add_argument(
        "--legend",
        choices=("auto", "all", "none"),
        default="auto",
        help="table of groups (auto: all up to 40, else blocked/new only)",
    )
    p.add_argument(
        "--rankdir",
        choices=("TB", "LR"),
        default="TB",
        help="top to bottom (default) or left to right",
    )
    p.add_argument(
        "--sizes", action="store_true", help="also draw nodes that compute sizes (shape arithmetic)"
    )
    p.add_argument("--title", help="title of the drawing")
    p.add_argument("--dpi", type=float, help="resolution of PNG output")
    _run_flag(p)
    p.set_defaults(func=cmd_draw)
    return parser
