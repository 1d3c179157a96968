"""``fxgrow.save`` / ``fxgrow.load`` of a student that is its teacher's Hugging Face class.

Such a student is written as a Hugging Face folder (``save_folder``), not in fxgrow's graph
format: it is a plain ``PreTrainedModel`` whose config holds its widths, so the folder is what
``from_pretrained`` -- and every tool around it -- reads, with no fxgrow needed.  The growth
record (``fxgrow.growth.growth_record(model)``: the expansions ``fxgrow.transfer_optimizer``
and ``fxgrow.map_tensor`` read, the config fields, the measured error ...) is kept whole beside
the weights in ``fxgrow_growth.json`` (``fxgrow.io.growth_codec``'s JSON form);
``fxgrow.load(folder)`` gives the model back with it.

Invariant: ``load(save(student, folder))`` is ``type(student)`` with the same tensors (bit
for bit) and the same growth record; with ``example_inputs`` the written folder is loaded
back and must give identical outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, LoadError

RECORD_FILE = "fxgrow_growth.json"


def save_student(
    model: Any,
    path: str | os.PathLike,
    *,
    example_inputs: Any = None,
    verify: bool = True,
    teacher: Any = None,
) -> Path:
    """Write ``model`` (a ``PreTrainedModel``) as a Hugging Face folder at ``path`` with its
    growth record; ``teacher``'s fingerprint is recorded when given."""
    from ..growth import growth_record
    from ..io.growth_codec import encode
    from .folder import save_folder

    out = Path(path)
    if out.suffix in (".safetensors", ".pt", ".pth", ".bin"):
        raise InputError(
            f"{type(model).__name__} is a Hugging Face model: fxgrow.save writes "
            f"it as a folder (config.json + safetensors), not as the single file "
            f"{out.name}; pass a folder path"
        )
    record = growth_record(model)
    desc: dict[str, Any] = {"class": type(model).__name__}
    if record is not None:
        desc["growth"] = encode(record)
    if teacher is not None:
        from ..io import fingerprint

        desc["teacher"] = {"fingerprint": fingerprint(teacher)}
    save_folder(model, out, overwrite=True)
    (out / RECORD_FILE).write_text(json.dumps(desc))
    if verify and example_inputs is not None:
        _check_round_trip(model, out, example_inputs)
    return out


def load_student(path: str | os.PathLike) -> torch.nn.Module:
    """The model ``save_student`` wrote, as its class, with its growth record (an empty
    one for a folder fxgrow did not write)."""
    from ..growth import GrowthRecord, set_growth_record
    from ..io.growth_codec import decode
    from .folder import load_folder

    model = load_folder(path)
    record = GrowthRecord()
    f = Path(path) / RECORD_FILE
    if f.is_file():
        try:
            desc = json.loads(f.read_text())
        except ValueError as e:
            raise LoadError(
                f"{f} is malformed ({type(e).__name__}: {e}); it was not written "
                f"by fxgrow.save or is damaged"
            ) from e
        if isinstance(desc, dict) and "growth" in desc:
            record = decode(desc["growth"], str(f))
        else:  # a folder written before the growth record
            record = decode(desc, str(f), legacy=True)
    set_growth_record(model, record)
    return model


def _check_round_trip(model: Any, path: Path, example_inputs: Any) -> None:
    from ..api import as_tuple
    from ..errors import PreservationError
    from .student import main_output

    inputs = as_tuple(example_inputs)
    again = load_student(path)
    modes = model.training
    model.eval()
    try:
        with torch.no_grad():
            a = main_output(model(*inputs, use_cache=False))
            b = main_output(again(*inputs, use_cache=False))
    finally:
        model.train(modes)
    if a.shape != b.shape or not torch.equal(a, b):
        raise PreservationError(
            f"the folder {path} loads as a model whose outputs differ from "
            f"the saved {type(model).__name__}'s"
        )
