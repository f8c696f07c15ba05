"""Read a TF1 name-based checkpoint (TensorFlow's tensor bundle) with numpy alone.

Keras 3 apps on the JAX or PyTorch backend have no TensorFlow to call
``tf.train.load_checkpoint`` with, so this module parses the two files itself
and never executes anything from them:

- ``PREFIX.index`` is a LevelDB-style SSTable: data blocks of prefix-compressed
  ``key → value`` entries, an index block pointing at them and a 48-byte footer
  ending in a magic number. The empty key holds a ``BundleHeaderProto``
  (number of shards, endianness); every other key is a tensor name whose value
  is a ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked crc32c).
- ``PREFIX.data-NNNNN-of-MMMMM`` holds the raw tensor bytes.

Every block and every tensor read is checked against its crc32c (computed with
numpy over many lanes at once, then combined), so a damaged or truncated file
is reported as such instead of yielding wrong weights.

Example:
    >>> reader = BundleReader("chinese_roformer-sim-char-ft_L-6_H-384_A-6/bert_model.ckpt")
    >>> reader.shapes()["bert/pooler/dense/kernel"]
    (384, 384)
    >>> kernel = reader.read("bert/pooler/dense/kernel")
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RoformerSimError

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5  # compression type byte + masked crc32c
# TensorFlow DataType enum values → numpy dtypes (little-endian); others are not tensors we read.
_DTYPES = {
    1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8",
}


# ------------------------------------------------------------------ crc32c
def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_TABLE = _crc_table()


def _raw_crc(state: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Advance crc registers ``state`` [lanes] over the bytes of their rows of ``data`` [lanes, n]."""
    for column in np.ascontiguousarray(data.T):
        state = _TABLE[(state ^ column) & 0xFF] ^ (state >> 8)
    return state


def _raw_crc_bytes(state: int, data: bytes) -> int:
    table = _TABLE_LIST
    for byte in data:
        state = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


_TABLE_LIST = [int(v) for v in _TABLE]


def _shift_matrix(nbytes: int) -> np.ndarray:
    """The 32 column images of the linear map "feed ``nbytes`` zero bytes" on a crc register."""
    one = np.uint32(1) << np.arange(32, dtype=np.uint32)
    power = _TABLE[one & 0xFF] ^ (one >> 8)  # one zero byte
    result = one  # identity
    while nbytes:
        if nbytes & 1:
            result = _apply(power, result)
        power = _apply(power, power)
        nbytes >>= 1
    return result


def _apply(matrix: np.ndarray, states: np.ndarray) -> np.ndarray:
    """The linear map ``matrix`` (32 column images) applied to every register in ``states``."""
    out = np.zeros_like(states)
    for j in range(32):
        out ^= np.where((states >> np.uint32(j)) & 1, matrix[j], np.uint32(0))
    return out


def crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """CRC-32C (Castagnoli) of ``data``. Large inputs are cut into up to 65536 equal lanes
    advanced together by numpy, whose registers are then combined pairwise using
    crc(A + B) = shift_|B|(crc(A)) ^ crc(B) (registers started at 0: the map is linear)."""
    buf = data.view(np.uint8).ravel() if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if len(buf) < 8192:
        return _raw_crc_bytes(0xFFFFFFFF, buf.tobytes()) ^ 0xFFFFFFFF
    lanes = 1 << min(16, (len(buf) // 4096).bit_length() - 1)
    width = len(buf) // lanes
    state = _raw_crc(np.zeros(lanes, np.uint32), buf[: lanes * width].reshape(lanes, width))
    span = width
    while len(state) > 1:
        state = _apply(_shift_matrix(span), state[0::2]) ^ state[1::2]
        span *= 2
    body = int(state[0]) ^ int(_apply(_shift_matrix(lanes * width), np.array([0xFFFFFFFF], np.uint32))[0])
    return _raw_crc_bytes(body, buf[lanes * width :].tobytes()) ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    """LevelDB/TensorFlow store ``rotate_right(crc, 15) + 0xa282ead8``; undo it."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------ protobuf bits
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as ints, length-delimited as bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: ``BundleEntryProto`` decoded."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool

    @classmethod
    def parse(cls, value: bytes) -> "BundleEntry":
        dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, None, False
        for number, field in _fields(value):
            if number == 1:
                dtype = field
            elif number == 2:
                dims = [dict(_fields(dim)).get(1, 0) for n, dim in _fields(field) if n == 2]
                shape = tuple(int(d) for d in dims)
            elif number == 3:
                shard = field
            elif number == 4:
                offset = field
            elif number == 5:
                size = field
            elif number == 6:
                crc = field
            elif number == 7:
                sliced = True
        return cls(dtype, shape, shard, offset, size, crc, sliced)


# --------------------------------------------------------------- the table
def _read_block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    if offset + size + _BLOCK_TRAILER > len(data):
        raise RoformerSimError(f"{path}: truncated (a block ends at byte {offset + size + _BLOCK_TRAILER}, the file has {len(data)})")
    block = data[offset : offset + size]
    kind, stored = struct.unpack_from("<BI", data, offset + size)
    if crc32c(data[offset : offset + size + 1]) != unmask(stored):
        raise RoformerSimError(f"{path}: corrupt (block at byte {offset} fails its crc32c)")
    if kind != 0:
        raise RoformerSimError(f"{path}: compressed table blocks (type {kind}) are not supported")
    return block


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of one SSTable block (keys are stored as shared prefix + suffix)."""
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (restarts + 1)
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + size]))
        pos += size
    return entries


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


class BundleReader:
    """The tensors of a TF1 name-based checkpoint, read with numpy.

    Args:
        prefix: the checkpoint prefix (``…/bert_model.ckpt``), as for ``tf.train.load_checkpoint``.

    Raises :class:`RoformerSimError` (one line, naming the file) for a missing,
    truncated or corrupt file and for layouts this reader does not cover
    (compressed blocks, big-endian or partitioned variables).
    """

    def __init__(self, prefix: str | os.PathLike) -> None:
        self.prefix = Path(prefix)
        index = Path(f"{self.prefix}.index")
        try:
            data = index.read_bytes()
        except FileNotFoundError:
            raise RoformerSimError(f"checkpoint file missing: {index}") from None
        if len(data) < _FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
            raise RoformerSimError(f"{index}: not a TF checkpoint index (no table footer; truncated?)")
        try:
            _, _, pos = _handle(data, len(data) - _FOOTER_SIZE)  # metaindex: unused
            index_offset, index_size, _ = _handle(data, pos)
            self.entries: dict[str, BundleEntry] = {}
            header = None
            for _, handle in _block_entries(_read_block(data, index_offset, index_size, index)):
                offset, size, _ = _handle(handle)
                for key, value in _block_entries(_read_block(data, offset, size, index)):
                    if key == b"":
                        header = dict(_fields(value))
                    else:
                        self.entries[key.decode("utf-8")] = BundleEntry.parse(value)
        except (ValueError, struct.error, IndexError, UnicodeDecodeError) as e:
            raise RoformerSimError(f"{index}: corrupt checkpoint index ({e})") from None
        if header is None:
            raise RoformerSimError(f"{index}: checkpoint index has no bundle header")
        if header.get(2, 0) != 0:
            raise RoformerSimError(f"{index}: big-endian checkpoints are not supported")
        self.num_shards = int(header.get(1, 1))
        self._shards: dict[int, np.memmap] = {}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape by name (``get_variable_to_shape_map``)."""
        return {name: entry.shape for name, entry in self.entries.items()}

    def _shard(self, shard: int) -> np.memmap:
        if shard not in self._shards:
            path = Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")
            if not path.exists():
                raise RoformerSimError(f"checkpoint file missing: {path}")
            self._shards[shard] = np.memmap(path, np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
        return self._shards[shard]

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """The tensor ``name`` as a new numpy array (checked against its crc32c when ``verify``)."""
        if name not in self.entries:
            raise RoformerSimError(f"{self.prefix}: checkpoint has no variable {name}")
        entry = self.entries[name]
        if entry.sliced:
            raise RoformerSimError(f"{self.prefix}: variable {name} is partitioned; not supported")
        if entry.dtype not in _DTYPES:
            raise RoformerSimError(f"{self.prefix}: variable {name} has TF dtype {entry.dtype}, not a numeric tensor")
        data = self._shard(entry.shard)
        end = entry.offset + entry.size
        if end > len(data):
            raise RoformerSimError(
                f"{self.prefix}.data-{entry.shard:05d}-of-{self.num_shards:05d}: truncated "
                f"(variable {name} ends at byte {end}, the file has {len(data)})"
            )
        raw = np.array(data[entry.offset : end])
        if verify and entry.crc32c is not None and crc32c(raw) != unmask(entry.crc32c):
            raise RoformerSimError(f"{self.prefix}: variable {name} fails its crc32c (corrupt data file)")
        dtype = np.dtype(_DTYPES[entry.dtype])
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise RoformerSimError(f"{self.prefix}: variable {name} has {entry.size} bytes for shape {entry.shape}")
        return raw.view(dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
