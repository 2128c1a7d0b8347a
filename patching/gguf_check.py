"""Is a ``.gguf`` file whole? A structural check before transformers reads it.

A download cut short leaves a GGUF file whose header promises tensors beyond
its end. transformers then fails inside its tokenizer conversion ("cannot
reshape array ...") or with a bare ``struct.error``, which reads like a
tokenizer bug. :func:`check_gguf_file` walks the header, the metadata and the
tensor table (no tensor data is read, so it takes milliseconds) and says
whether the file is truncated or corrupted, with its size.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, version (u32), tensor
count (u64), metadata count (u64), the metadata (key string, value type u32,
value), the tensor table (name, n_dims u32, dims u64 each, type u32, offset
u64), then the tensor data from the next multiple of ``general.alignment``.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from patching.errors import ModelLoadError

_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_DEFAULT_ALIGNMENT = 32


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> int | float | bool:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise _Truncated
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value  # type: ignore[no-any-return]

    def string(self) -> str:
        length = int(self.unpack("Q"))
        if self.pos + length > len(self.buf):
            raise _Truncated
        raw = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item = int(self.unpack("I"))
            count = int(self.unpack("Q"))
            if item in _SCALARS:
                size = struct.calcsize("<" + _SCALARS[item]) * count
                if self.pos + size > len(self.buf):
                    raise _Truncated
                self.pos += size
                return None
            for _ in range(count):
                self.value(item)
            return None
        raise ValueError(f"unknown metadata value type {kind}")


def _tensor_bytes(dims: list[int], kind: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    count = 1
    for d in dims:
        count *= d
    return count // block * size


def check_gguf_file(path: str | Path) -> None:
    """Raise :class:`ModelLoadError` if ``path`` is not a whole GGUF file.

    The message names the file, its size, and whether it ends early (truncated:
    download it again) or does not parse (corrupted or not GGUF).
    """
    p = Path(path)
    size = p.stat().st_size
    problem = None
    try:
        with p.open("rb") as fh:
            if size == 0:
                raise _Truncated
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                problem = _walk(_Reader(buf), size)
    except _Truncated:
        problem = "truncated: it ends inside its header or tensor table"
    except (ValueError, KeyError, UnicodeDecodeError, OverflowError, struct.error) as exc:
        problem = f"corrupted: its header does not parse ({exc})"
    if problem:
        raise ModelLoadError(
            f"GGUF file {p} ({size:,} bytes) is {problem}; download or copy it again "
            f"(compare its size and checksum with the source)"
        )


def _walk(r: _Reader, size: int) -> str | None:
    if r.buf[:4] != b"GGUF":
        return f"corrupted: it does not start with the GGUF magic (got {bytes(r.buf[:4])!r})"
    r.pos = 4
    version = int(r.unpack("I"))
    if version not in (2, 3):
        return f"corrupted or of an unknown GGUF version {version}"
    n_tensors = int(r.unpack("Q"))
    n_kv = int(r.unpack("Q"))
    alignment = _DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = r.string()
        value = r.value(int(r.unpack("I")))
        if key == "general.alignment" and isinstance(value, int) and value > 0:
            alignment = value
    end = 0
    for _ in range(n_tensors):
        r.string()
        dims = [int(r.unpack("Q")) for _ in range(int(r.unpack("I")))]
        kind = int(r.unpack("I"))
        offset = int(r.unpack("Q"))
        end = max(end, offset + _tensor_bytes(dims, kind))
    start = -(-r.pos // alignment) * alignment
    if start + end > size:
        return f"truncated: its tensors need {start + end:,} bytes"
    return None
