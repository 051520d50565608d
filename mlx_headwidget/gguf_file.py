"""Read a GGUF file's header: its metadata and the name, type, shape and place of every tensor.

The header is checked before any tensor is read, so a file that is not GGUF, is cut short, or holds
a tensor type we do not read correctly is refused by name (`GGUFError`), before anything is built.

Layout (GGUF v2 and v3, little-endian): "GGUF", version u32, n_tensors u64, n_kv u64; n_kv pairs
(key string, value type u32, value); n_tensors infos (name string, n_dims u32, dims u64[n_dims]
innermost first, type u32, offset u64); padding to `general.alignment` (32); the tensor data, each
tensor at data_start + offset. A string is a u64 byte count then UTF-8 bytes.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GGUFError

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    30: ("BF16", 1, 2),
}
QUANTIZED = ("Q4_0", "Q4_1", "Q8_0")
"""Types MLX loads as its own quantized layers (group size 32), equal to gguf's dequantization."""
EXPANDED = ("Q6_K",)
"""Types MLX expands to float16 on load: gguf's dequantization rounded to float16."""
SUPPORTED = ("F32", "F16", "BF16", *QUANTIZED, *EXPANDED)
# Not read: MLX 0.32 fails on Q5_0/Q5_1/Q3_K/Q5_K/IQ*, drops some types without a word (TQ1_0),
# and expands Q4_K with every second group of 32 values wrong (measured against gguf's own
# dequantizer), so a Q4_K file would load without an error and with wrong weights.

# metadata value type id -> struct format of a scalar (8 = string, 9 = array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}  # fmt: skip
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8",
          11: "<i8", 12: "<f8"}  # fmt: skip
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file: numpy-order shape (outermost first), ggml type name, byte range."""

    name: str
    shape: tuple[int, ...]
    type: str
    start: int  # absolute byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]


class _Reader:
    """Sequential reads from a buffer that raise `GGUFError` when the file ends too early."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(
                f"{self.path}: the file ends inside the header (reading {what} at byte "
                f"{self.pos}, file size {len(self.buf)}): truncated or not a GGUF file"
            )
        data = self.buf[self.pos : self.pos + n]  # a copy: nothing keeps the map open
        self.pos += n
        return data

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = self.take(self.scalar("<Q", what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # llama.cpp's own files hold a few tokens that are not valid UTF-8; keep them readable
            return raw.decode("utf-8", errors="replace")

    def value(self, kind: int, key: str) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind], key)
        if kind == _STRING:
            return self.string(key)
        if kind == _ARRAY:
            item, count = self.scalar("<I", key), self.scalar("<Q", key)
            if item in _NUMPY:  # numbers: one numpy read instead of count struct calls
                dtype = np.dtype(_NUMPY[item])
                return np.frombuffer(self.take(count * dtype.itemsize, key), dtype=dtype).copy()
            if item in (_STRING, _ARRAY):
                return [self.value(item, key) for _ in range(count)]
            kind = item
        raise GGUFError(
            f"{self.path}: metadata {key!r} has an unknown value type {kind} (a corrupt file?)"
        )


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse and check the header of the GGUF file at `path`.

    Raises `GGUFError` (naming the file) if it is not a GGUF v2/v3 file, if the header or any
    tensor's data runs past the end of the file, or if a tensor has a type not in `SUPPORTED`.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise GGUFError(f"{path}: the file is empty")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        r = _Reader(buf, path)
        magic, r.pos = buf[:4], 4
        if magic != b"GGUF":
            raise GGUFError(f"{path}: not a GGUF file (it starts with {magic!r}, not b'GGUF')")
        version = r.scalar("<I", "the version")
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
        n_tensors, n_kv = r.scalar("<Q", "the tensor count"), r.scalar("<Q", "the key count")
        metadata = {}
        for _ in range(n_kv):
            key = r.string("a metadata key")
            metadata[key] = r.value(r.scalar("<I", key), key)
        infos = []
        for _ in range(n_tensors):
            name = r.string("a tensor name")
            dims = [r.scalar("<Q", name) for _ in range(r.scalar("<I", name))]
            infos.append((name, tuple(reversed(dims)), r.scalar("<I", name), r.scalar("<Q", name)))
        alignment = int(metadata.get("general.alignment", 32))
        data_start = -(-r.pos // alignment) * alignment
    tensors = {}
    for name, shape, type_id, offset in infos:
        tensors[name] = _tensor_info(path, name, shape, type_id, data_start + offset, size)
    return GGUFHeader(path, version, metadata, tensors)


def _tensor_info(path, name, shape, type_id, start, file_size) -> TensorInfo:
    if type_id not in GGML_TYPES:
        raise GGUFError(
            f"{path}: tensor {name!r} has ggml type {type_id}, which this reader does not know; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    type_name, block, block_bytes = GGML_TYPES[type_id]
    if type_name not in SUPPORTED:
        raise GGUFError(
            f"{path}: tensor {name!r} is stored as {type_name}, which is not read here (MLX "
            f"cannot load it, or loads it wrong); supported types: {', '.join(SUPPORTED)}. "
            "Convert the file to one of them (e.g. llama.cpp's llama-quantize with Q8_0 or Q4_0)"
        )
    n = int(np.prod(shape, dtype=np.int64))
    if shape[-1] % block:
        raise GGUFError(
            f"{path}: tensor {name!r} of shape {shape} has rows of {shape[-1]} values, not a "
            f"multiple of {type_name}'s block of {block}"
        )
    nbytes = n // block * block_bytes
    if start + nbytes > file_size:
        raise GGUFError(
            f"{path}: tensor {name!r} needs bytes {start}..{start + nbytes} but the file has "
            f"{file_size} bytes: the file is truncated (an incomplete download?)"
        )
    return TensorInfo(name, shape, type_name, start, nbytes)


def read_raw(header: GGUFHeader, name: str, dtype: str) -> np.ndarray:
    """The bytes of tensor `name` viewed as numpy `dtype` with the tensor's shape (a copy)."""
    info = header.tensors[name]
    with open(header.path, "rb") as f:
        f.seek(info.start)
        raw = f.read(info.nbytes)
    return np.frombuffer(raw, dtype=dtype).reshape(info.shape).copy()
