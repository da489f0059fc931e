"""TFRecord files without TensorFlow: framing, masked CRC-32C checks, atomic writing.

A record on disk is::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) is computed by ``google-crc32c`` (the hardware
``crc32`` instruction; the package Google's storage clients use) where it is installed, and otherwise
with numpy (``crc32c_numpy``; ``CRC32C_BACKEND`` says which one runs): the buffer is cut into
equal chunks whose CRC registers advance together, one vectorised slicing-by-4 step per 4 bytes, and
the chunk registers are then folded pairwise with the linear "append n zero bytes" operator. CRC
arithmetic is linear over GF(2), so this equals the byte-serial definition (the tests check both).
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from detector.atomic import AtomicWriter
from detector.errors import InputError

try:  # the hardware CRC; the numpy version below is the fallback and the tests prove both equal
    import google_crc32c as _google_crc32c
except ImportError:  # pragma: no cover - depends on the installation
    _google_crc32c = None

_POLY = 0x82F63B78
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


class RecordError(InputError):
    """A corrupt or truncated TFRecord; ``path`` and ``offset`` (byte offset of the record) say where."""

    def __init__(self, path: str | os.PathLike, offset: int, reason: str):
        self.path = str(path)
        self.offset = int(offset)
        self.reason = reason
        super().__init__(f"{self.path}: corrupt record at byte offset {self.offset}: {reason}")


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


#: _TABLES[k][b]: register contribution of byte b followed by k zero bytes (slicing-by-4).
_TABLES = np.zeros((4, 256), np.uint32)
_TABLES[0] = _byte_table()
for _k in range(1, 4):
    _TABLES[_k] = (_TABLES[_k - 1] >> 8) ^ _TABLES[0][_TABLES[_k - 1] & 0xFF]
_T0_LIST = _TABLES[0].tolist()


def _crc_register_serial(data: bytes | memoryview, reg: int) -> int:
    """Byte-serial register update (the definition); used for short inputs and tails."""
    t = _T0_LIST
    for b in bytes(data):
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


# --- linear maps on the 32-bit register, stored as the images of the 32 basis vectors ------------

def _apply(images: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply the GF(2)-linear map given by ``images`` (32,) to every value of ``x``."""
    x = np.asarray(x, np.uint32)
    bits = (x[..., None] >> np.arange(32, dtype=np.uint32)) & np.uint32(1)
    return np.bitwise_xor.reduce(np.where(bits.astype(bool), images, np.uint32(0)), axis=-1)


@lru_cache(maxsize=64)
def _zeros_operator(n: int) -> np.ndarray:
    """Images of the basis vectors under "process n zero bytes" (the register shift by n bytes)."""
    if n == 0:
        return (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    if n == 1:
        basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
        return (_TABLES[0][basis & 0xFF] ^ (basis >> 8)).astype(np.uint32)
    half = _zeros_operator(n // 2)
    op = _apply(half, half)  # half∘half
    if n % 2:
        op = _apply(_zeros_operator(1), op)
    return op


@lru_cache(maxsize=64)
def _zeros_tables(n: int) -> np.ndarray:
    """(4, 256) byte tables of the n-zero-byte operator, to apply it with four look-ups."""
    op = _zeros_operator(n)
    values = np.arange(256, dtype=np.uint32)
    return np.stack([_apply(op, values << np.uint32(8 * k)) for k in range(4)])


def _shift(reg: np.ndarray, n: int) -> np.ndarray:
    t = _zeros_tables(n)
    return t[0][reg & 0xFF] ^ t[1][(reg >> 8) & 0xFF] ^ t[2][(reg >> 16) & 0xFF] ^ t[3][reg >> 24]


def _crc_register_chunks(words: np.ndarray) -> np.ndarray:
    """Registers (from 0) of K chunks at once; ``words`` (L, K) little-endian uint32 words."""
    t0, t1, t2, t3 = _TABLES
    reg = np.zeros(words.shape[1], np.uint32)
    for w in words:
        x = reg ^ w
        reg = t3[x & 0xFF] ^ t2[(x >> 8) & 0xFF] ^ t1[(x >> 16) & 0xFF] ^ t0[x >> 24]
    return reg


def crc32c_numpy(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data`` (init and final xor 0xFFFFFFFF, as every CRC-32C user expects), numpy only."""
    buf = memoryview(data).cast("B")
    n = len(buf)
    if n < 1024:
        return _crc_register_serial(buf, _U32) ^ _U32
    # The initial register 0xFFFFFFFF equals xor-ing 0xFF into the first 4 bytes and starting at 0.
    arr = np.frombuffer(buf, np.uint8)
    chunk = 64 if n < 65536 else 256  # bytes per lane, a multiple of 4
    k = n // chunk
    main = arr[: k * chunk].copy()
    main[:4] ^= 0xFF
    words = main.view("<u4").reshape(k, chunk // 4).T
    regs = _crc_register_chunks(np.ascontiguousarray(words))
    # Fold neighbours: reg(a || b) = shift_|b|(reg(a)) ^ reg(b). Leading all-zero chunks change nothing.
    pad = (1 << int(k - 1).bit_length()) - k
    if pad:
        regs = np.concatenate([np.zeros(pad, np.uint32), regs])
    size = chunk
    while len(regs) > 1:
        regs = _shift(regs[0::2], size) ^ regs[1::2]
        size *= 2
    reg = int(regs[0])
    tail = buf[k * chunk:]
    if len(tail):
        reg = _crc_register_serial(tail, reg)
    return reg ^ _U32


def _crc32c_google(data: bytes | bytearray | memoryview) -> int:
    # its C entry point takes read-only buffers only: bytes as they are, anything else copied once
    return _google_crc32c.value(data if isinstance(data, bytes) else bytes(data))


#: "google-crc32c (c)" / "google-crc32c (python)" or "numpy": the implementation ``crc32c`` uses.
CRC32C_BACKEND = f"google-crc32c ({_google_crc32c.implementation})" if _google_crc32c is not None else "numpy"
if _google_crc32c is not None and _google_crc32c.implementation == "c":
    crc32c = _crc32c_google
else:  # google-crc32c's pure-python fallback is slower than the numpy version
    CRC32C_BACKEND = "numpy"
    crc32c = crc32c_numpy
crc32c.__doc__ = "CRC-32C of ``data`` (init and final xor 0xFFFFFFFF); the backend is ``CRC32C_BACKEND``."


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def encode_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return b"".join([header, struct.pack("<I", masked_crc32c(header)), data,
                     struct.pack("<I", masked_crc32c(data))])


class TFRecordWriter(AtomicWriter):
    """Writes records to a temporary file next to ``path``; ``close()`` renames it into place.

    Used as a context manager, an exception inside the block removes the temporary file and leaves
    ``path`` untouched.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.count = 0

    def write(self, data: bytes) -> None:
        self._write(encode_record(data))
        self.count += 1


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write all ``records`` atomically; returns how many were written."""
    with TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    return w.count


def iter_records_with_offsets(path: str | os.PathLike, verify: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte_offset, data)`` of every record; raises ``RecordError`` at the first bad one."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        offset = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise RecordError(path, offset, f"truncated header ({len(header)} of 12 bytes)")
            (length,) = struct.unpack("<Q", header[:8])
            (length_crc,) = struct.unpack("<I", header[8:])
            if verify and masked_crc32c(header[:8]) != length_crc:
                raise RecordError(path, offset, "length CRC mismatch")
            if length > size - offset - 16:  # also when not verifying: never allocate what is not there
                raise RecordError(path, offset, f"header claims {length} bytes of data, the file has "
                                                f"{max(size - offset - 16, 0)} after it (truncated or damaged)")
            data = f.read(length)
            if len(data) < length:
                raise RecordError(path, offset, f"truncated data ({len(data)} of {length} bytes)")
            footer = f.read(4)
            if len(footer) < 4:
                raise RecordError(path, offset, "truncated data CRC")
            if verify and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise RecordError(path, offset, f"data CRC mismatch ({length} bytes)")
            yield offset, data
            offset += 16 + length


def iter_records(path: str | os.PathLike, verify: bool = True) -> Iterator[bytes]:
    for _, data in iter_records_with_offsets(path, verify):
        yield data


__all__ = [
    "RecordError", "crc32c", "crc32c_numpy", "CRC32C_BACKEND", "masked_crc32c", "encode_record", "TFRecordWriter",
    "write_tfrecord", "iter_records", "iter_records_with_offsets",
]
