"""A small, strict reader for the IDX format used by (Fashion-)MNIST.

Format: 2 zero bytes, one type byte, one byte with the number of dimensions, then one big-endian
uint32 per dimension, then the data in C order (big-endian for multi-byte types). The files may
be gzip-compressed. We read it ourselves (a few lines of numpy) so that loading needs no network
and no torchvision, and every inconsistency becomes a DataError naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from hetsearch.errors import DataError

# IDX type byte -> numpy dtype (big-endian as stored).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the content starts with the gzip magic (not by name, so a
    decompressed file that kept its .gz name, or the reverse, still reads)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: IDX file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc}); delete the file and fetch it again") from None
    return raw


def parse_idx(data: bytes, name: str = "<bytes>", expected_ndim: Optional[int] = None) -> np.ndarray:
    """Decode uncompressed IDX bytes into an array in native byte order.

    Args:
        data: the file's (decompressed) bytes.
        name: used in error messages (the file path).
        expected_ndim: when given, a different number of dimensions is an error.
    """
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number {data[:4].hex()}; expected 0000TTDD)")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX data type 0x{type_code:02x}")
    if ndim < 1:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{name}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{name}: IDX header truncated ({len(data)} bytes, expected at least {header_len})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        raise DataError(
            f"{name}: IDX data size {actual} bytes does not match the header (dims {dims} x "
            f"{dtype.itemsize} bytes = {expected}); the file is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, expected_ndim: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not); any defect raises DataError naming the file."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path), expected_ndim=expected_ndim)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (used by tests to write small fixtures)."""
    array = np.asarray(array)
    for code, dtype in IDX_DTYPES.items():
        if dtype.kind == array.dtype.kind and dtype.itemsize == array.dtype.itemsize:
            header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
            return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    raise ValueError(f"no IDX type for dtype {array.dtype}")
