"""Lazy reading of safetensors checkpoints, one tensor at a time.

A ``Checkpoint`` parses every shard's header (the JSON that names each tensor's dtype, shape
and byte range) and checks that the files hold all the bytes the headers promise.  Tensors are
read on demand with one read-only file handle per shard, straight into a fresh tensor
(``readinto``): no memory map, so the pages of a shard never count against the process once
a tensor is freed, and a byte range can be copied to the output without becoming a tensor
(``copy_to``).  Every student tensor that changes needs all of its teacher tensor (a widened
axis reads every old position), so whole-tensor reads are all the growth needs."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import CheckpointError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
CODES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


# copy_file_range refused: not between these files / file systems, or not here
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}


def _fileno(out: BinaryIO) -> int | None:
    try:
        return out.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: file, dtype code, shape and absolute byte range [start, end)."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """The tensor's size in the file, in bytes."""
        return self.end - self.start

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of the safetensors dtype code."""
        return DTYPES[self.dtype]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of one safetensors file; refuses a truncated or malformed file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(
                    f"{path} is truncated: {size} bytes, not even a header; "
                    f"copy or download it again"
                )
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise CheckpointError(
                    f"{path} is truncated or not safetensors: its header "
                    f"claims {n} bytes but the file has {size}"
                )
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(
            f"shard {path} is missing; the checkpoint is incomplete (download or copy it again)"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has a corrupt safetensors header ({e})") from None
    base = 8 + n
    infos = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (a, b) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        if dtype not in DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {dtype}, which fxgrow cannot stream"
            )
        want = math.prod(shape) * DTYPES[dtype].itemsize
        if b - a != want:
            raise CheckpointError(
                f"{path}: tensor {name!r} spans {b - a} bytes but its shape "
                f"{list(shape)} in {dtype} needs {want}"
            )
        infos[name] = TensorInfo(name, path, dtype, shape, base + a, base + b)
    end = max((i.end for i in infos.values()), default=base)
    if size < end:
        raise CheckpointError(
            f"{path} is truncated: {size} bytes, its header needs {end}; copy or download it again"
        )
    return infos


class Checkpoint:
    """A safetensors checkpoint (an HF folder with or without an index, or one file), read
    lazily.  ``tensors`` maps each name to its ``TensorInfo``.  Use as a context manager."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        weight_map: dict[str, str] | None = None
        if path.is_file():
            files = [path]
        elif (path / INDEX).is_file():
            try:
                weight_map = json.loads((path / INDEX).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{path / INDEX} is not a safetensors index ({e})") from None
            files = [path / f for f in dict.fromkeys(weight_map.values())]
        elif (path / SINGLE).is_file():
            files = [path / SINGLE]
        elif path.is_dir():
            files = sorted(path.glob("*.safetensors"))
            if not files:
                raise CheckpointError(
                    f"{path} holds no .safetensors file; fxgrow streams "
                    f"safetensors only (convert with save_pretrained)"
                )
        else:
            raise CheckpointError(f"{path} does not exist")
        self.path = path
        self.tensors: dict[str, TensorInfo] = {}
        for f in files:
            for name, info in read_header(f).items():
                if name in self.tensors:
                    raise CheckpointError(
                        f"tensor {name!r} is in both {self.tensors[name].file} and {f}"
                    )
                self.tensors[name] = info
        if weight_map is not None:
            missing = [n for n, f in weight_map.items() if n not in self.tensors]
            if missing:
                raise CheckpointError(
                    f"the index names {len(missing)} tensors its shards do "
                    f"not hold, first {missing[0]!r} (in {weight_map[missing[0]]})"
                )
        self._handles: dict[Path, io.BufferedReader] = {}
        self._buffer = bytearray(0)  # copy_to's, reused

    def _handle(self, file: Path) -> io.BufferedReader:
        h = self._handles.get(file)
        if h is None:
            h = self._handles[file] = open(file, "rb")  # noqa: SIM115  (held open; closed by close())
        return h

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor ``name`` in its stored dtype: in fresh memory, or in the first bytes of
        ``out`` (a contiguous uint8 tensor at least that large, reused by the caller)."""
        info = self.tensors[name]
        return self._read(info, info.start, info.end, out).view(info.shape)

    def _read(
        self, info: TensorInfo, a: int, b: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        if out is None:
            out = torch.empty(b - a, dtype=torch.uint8)
        else:
            if out.dtype != torch.uint8 or not out.is_contiguous() or out.numel() < b - a:
                raise ValueError(f"internal: no room for {info.name!r} in the buffer given")
            out = out.reshape(-1)[: b - a]
        h = self._handle(info.file)
        h.seek(a)
        got = h.readinto(out.numpy().data)
        if got != b - a:
            raise CheckpointError(
                f"{info.file} ended while reading {info.name!r} (the file shrank while fxgrow ran?)"
            )
        return out.view(info.torch_dtype)

    def copy_to(self, name: str, out: BinaryIO, chunk: int = 8 << 20) -> None:
        """Append the stored bytes of ``name`` to ``out``: no tensor is made.  Between files
        the kernel copies them itself (``os.copy_file_range``: no pass through this
        process's memory; a reflink where the file system shares blocks); else, or where the
        kernel refuses, they go through one reused buffer in 8 MB chunks."""
        info = self.tensors[name]
        h = self._handle(info.file)
        offset, left = info.start, info.nbytes
        dst = _fileno(out) if left and hasattr(os, "copy_file_range") else None
        if dst is not None:
            out.flush()  # the kernel appends at the file's position
            try:
                while left:
                    n = os.copy_file_range(h.fileno(), dst, left, offset)
                    if not n:
                        raise CheckpointError(f"{info.file} ended while copying {name!r}")
                    offset, left = offset + n, left - n
            except OSError as e:
                if e.errno not in _NO_KERNEL_COPY:
                    raise
        if not left:
            return
        if len(self._buffer) < min(chunk, left):
            self._buffer = bytearray(min(chunk, left))
        view = memoryview(self._buffer)
        h.seek(offset)
        while left:
            n = h.readinto(view[: min(left, len(view))])
            if not n:
                raise CheckpointError(f"{info.file} ended while copying {name!r}")
            out.write(view[:n])
            left -= n

    def close(self) -> None:
        """Close every shard file opened so far (reading again reopens them)."""
        for h in self._handles.values():
            h.close()
        self._handles.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
