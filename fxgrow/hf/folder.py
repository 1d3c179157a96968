"""Hugging Face folders in and out.

Invariant: ``save_folder`` either leaves a complete folder at ``out_dir`` -- config.json,
generation_config.json, sharded safetensors with ``model.safetensors.index.json`` when more
than one shard, the source's tokenizer files and chat template, a model card -- or leaves
``out_dir`` as it was: everything is written to a temporary sibling folder first and renamed
at the end.  Tensors are written in their own dtype (no float32 copy of a bfloat16 model).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..growth import growth_record
from ..params import count_parameters

# what a source folder holds that is not the model's weights or config: copied as is
_NOT_COPIED = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".ckpt")
_OWN = {
    "config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "README.md",
    "generation_config.json",
}


def is_folder(path: str | os.PathLike) -> bool:
    """A Hugging Face model folder: a directory with a config.json."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def load_folder(path: str | os.PathLike):
    """The model in ``path`` as its architecture's class (``config.architectures[0]``), in the
    dtype it was saved in, in eval mode."""
    import transformers

    if not is_folder(path):
        raise InputError(f"{path} is not a Hugging Face model folder (no config.json)")
    config = transformers.AutoConfig.from_pretrained(path)
    archs = getattr(config, "architectures", None) or []
    cls = next((getattr(transformers, a) for a in archs if hasattr(transformers, a)), None)
    if cls is None:
        cls = transformers.AutoModel
    model = cls.from_pretrained(path, dtype="auto")
    return model.eval()


def example_ids(config: Any, batch: int = 2, length: int = 16, seed: int = 0) -> tuple:
    """Example inputs made from the config: token ids below its vocabulary size; for an
    encoder-decoder (T5) also the attention mask and decoder ids starting with its
    ``decoder_start_token_id``, in the order its ``forward`` takes them
    (``input_ids, attention_mask, decoder_input_ids``)."""
    g = torch.Generator().manual_seed(seed)
    vocab = int(getattr(config, "vocab_size", None) or 100)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    if not getattr(config, "is_encoder_decoder", False):
        return (ids,)
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(config, "pad_token_id", None)
    if start is None:
        raise InputError(
            "this encoder-decoder config has no decoder_start_token_id (nor "
            "pad_token_id) to start the decoder inputs with; set one in its "
            "config.json"
        )
    decoder = torch.randint(0, vocab, (batch, max(2, length // 2)), generator=g)
    decoder[:, 0] = int(start)
    return (ids, torch.ones_like(ids), decoder)


def model_card(
    student: Any, source: str | None, fields: dict, error: float | None, note: str = ""
) -> str:
    """A short README.md: what was grown from what, and the measured preservation error."""
    name = type(student).__name__
    lines = [f"# {name} grown with fxgrow", ""]
    lines.append(f"Grown from `{source}`" if source else "Grown from a teacher model")
    lines[-1] += (
        " by function-preserving growth (Net2Net-style): on any input it computes "
        "what the teacher computed, until it is trained further."
    )
    before: dict = {}
    if source and (Path(source) / "config.json").is_file():
        before = json.loads((Path(source) / "config.json").read_text())
    lines += ["", "| config field | teacher | grown |", "|---|---|---|"]
    lines += [
        f"| `{k}` | `{json.dumps(before.get(k))}` | `{json.dumps(v)}` |" for k, v in fields.items()
    ] or ["| (none) | | |"]
    if error is not None:
        lines += [
            "",
            f"Measured preservation error (max |student - teacher| / max |teacher| "
            f"of the output, fresh inputs with a padding mask): {error:.3g}.",
        ]
    if note:
        lines += ["", note]
    from .. import __version__

    params = count_parameters(student)
    lines += ["", f"{params:,} parameters.  Written by fxgrow {__version__}.", ""]
    return "\n".join(lines)


def save_folder(
    student: Any,
    out_dir: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    max_shard_size: str | int = "5GB",
    overwrite: bool = False,
    note: str = "",
) -> Path:
    """Write ``student`` (a ``transformers.PreTrainedModel``) as a Hugging Face folder.

    ``source``: the teacher's folder, whose tokenizer files, chat template and generation
    config are copied.  ``max_shard_size``: as ``save_pretrained`` takes it ("2GB", bytes).
    An existing ``out_dir`` is refused unless ``overwrite``."""
    from .student import is_pretrained

    if not is_pretrained(student):
        raise InputError(
            f"save_folder takes a transformers model, got {type(student).__name__}"
            f" (a graph student: grow it without as_graph=True, or save it with "
            f"fxgrow.save)"
        )
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass overwrite=True (--overwrite) or another folder")
    if source is not None and not is_folder(source):
        raise InputError(f"source {source} is not a Hugging Face model folder (no config.json)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        student.save_pretrained(tmp, max_shard_size=max_shard_size)
        if source is not None:
            for f in Path(source).iterdir():
                if f.is_file() and f.name not in _OWN and not f.name.endswith(_NOT_COPIED):
                    shutil.copy2(f, tmp / f.name)
            gen = Path(source) / "generation_config.json"
            if gen.is_file():
                shutil.copy2(gen, tmp / gen.name)
        record = growth_record(student)
        fields = dict(record.config_fields or {}) if record else {}
        error = record.fresh_error if record else None
        (tmp / "README.md").write_text(
            model_card(student, None if source is None else str(source), fields, error, note)
        )
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
