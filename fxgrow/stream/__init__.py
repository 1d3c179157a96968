"""Growing checkpoints larger than memory: plan on the meta device, apply the plan tensor by
tensor from safetensors shards into new shards, verify layer by layer.

``grow_checkpoint(src_dir, out_dir, blocks=..., widths=..., factor=...)`` (or ``to_config=``)
is the entry point for Hugging Face folders, ``widen_safetensors(meta_model, inputs, file, out_dir, ...)`` for
any model whose state dict is a safetensors file; ``make_stream_plan`` / ``write_student`` / ``verify_checkpoints``
are the parts, usable for any model whose state dict is in safetensors."""

from .check import verify_folders, verify_streamed
from .checkpoint import Checkpoint, TensorInfo, read_header
from .errors import CheckpointError, GrowthInterrupted, WriteError
from .generic import widen_safetensors
from .grow import GrowthReport, grow_checkpoint, parse_size, write_student
from .hf import example_ids, grown_config, meta_model
from .modules import ModuleStream, run_modules
from .plan import StreamPlan, TensorSource, depth_layout, make_stream_plan
from .planner import CheckpointPlan, plan_checkpoint
from .verify import StreamedCheck, StreamedRun, run_streamed, verify_checkpoints

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointPlan",
    "GrowthInterrupted",
    "GrowthReport",
    "ModuleStream",
    "StreamPlan",
    "StreamedCheck",
    "StreamedRun",
    "TensorInfo",
    "TensorSource",
    "WriteError",
    "depth_layout",
    "example_ids",
    "grow_checkpoint",
    "grown_config",
    "make_stream_plan",
    "meta_model",
    "parse_size",
    "plan_checkpoint",
    "read_header",
    "run_modules",
    "run_streamed",
    "verify_checkpoints",
    "verify_folders",
    "verify_streamed",
    "widen_safetensors",
    "write_student",
]
