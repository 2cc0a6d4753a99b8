"""MXNet RecordIO (``.rec`` + ``.idx``) image data sets, read and written without mxnet.

Format (dmlc-core ``recordio`` + ``mx.recordio.pack``), implemented here from its description:
  * a record is ``<u4 magic 0xced7230a><u4 lrec><payload><zero pad to 4 bytes>`` where
    ``lrec = cflag << 29 | length``. A payload that contains the magic word at a 4-byte aligned
    offset is split there into parts (cflag 1 = first, 2 = middle, 3 = last; 0 = whole), the
    magic word itself dropped and re-inserted by the reader between parts;
  * an image payload is an ``IRHeader`` ``<u4 flag><f4 label><u8 id><u8 id2>`` followed, when
    ``flag > 0``, by ``flag`` float32 labels, then the encoded image;
  * the ``.idx`` text file maps ``key<TAB>byte offset`` of each record, in write order.

Readers open the ``.rec`` file lazily once per process (file handles must not be shared by
forked loader workers, whose seeks would interleave).
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO, List, Optional, Sequence, Tuple, Union

import numpy as np
from iopath.common.file_io import g_pathmgr

from .base import EncodedImageDataset

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LREC = struct.Struct("<II")
_IR_HEADER = struct.Struct("<IfQQ")
_LEN_MASK = (1 << 29) - 1


def _frame(cflag: int, part: bytes) -> bytes:
    return _LREC.pack(MAGIC, (cflag << 29) | len(part)) + part


def pack_record(payload: bytes) -> bytes:
    """Frame one payload as RecordIO bytes (split at aligned magic words, padded to 4)."""
    if len(payload) >= 1 << 29:
        raise ValueError(f"RecordIO payload too large: {len(payload)} bytes")
    out, start = [], 0
    for pos in range(0, len(payload) - len(payload) % 4, 4):
        if payload[pos:pos + 4] == _MAGIC_BYTES:
            out.append(_frame(1 if start == 0 else 2, payload[start:pos]))
            start = pos + 4
    out.append(_frame(3 if start else 0, payload[start:]))
    out.append(b"\0" * (-len(payload) % 4))
    return b"".join(out)


def read_record(f: BinaryIO, where: str = "") -> bytes:
    """Read the record at ``f``'s current position (joining split parts)."""
    parts: List[bytes] = []
    while True:
        head = f.read(_LREC.size)
        if len(head) < _LREC.size:
            raise EOFError(f"RecordIO {where}: unexpected end of file")
        magic, lrec = _LREC.unpack(head)
        if magic != MAGIC:
            raise ValueError(f"RecordIO {where}: bad magic {magic:#x} (corrupt file or "
                             "wrong .idx offset)")
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        data = f.read(length)
        if len(data) < length:
            raise EOFError(f"RecordIO {where}: record truncated")
        f.read(-length % 4)
        parts.append(data)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)


def pack_image(label: Union[float, Sequence[float]], data: bytes, id: int = 0, id2: int = 0
               ) -> bytes:
    """An image payload as ``mx.recordio.pack`` writes it."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _IR_HEADER.pack(0, float(label), id, id2) + data
    arr = np.asarray(label, dtype=np.float32)
    return _IR_HEADER.pack(arr.size, 0.0, id, id2) + arr.tobytes() + data


def unpack_image(payload: bytes) -> Tuple[np.ndarray, bytes, int]:
    """``(labels float32 array, encoded image, id)`` of an image payload."""
    flag, label, id_, _ = _IR_HEADER.unpack_from(payload)
    off = _IR_HEADER.size
    if flag == 0:
        return np.array([label], dtype=np.float32), payload[off:], id_
    labels = np.frombuffer(payload, dtype=np.float32, count=flag, offset=off)
    return labels, payload[off + 4 * flag:], id_


class RecordIOWriter:
    """Writes an indexed ``.rec`` + ``.idx`` pair (tests, ``write_recordio``)."""

    def __init__(self, rec_path: str, idx_path: str):
        self.rec_path, self.idx_path = rec_path, idx_path
        self._rec = g_pathmgr.open(rec_path, "wb")
        self._idx = g_pathmgr.open(idx_path, "w")
        self._pos = 0

    def write(self, key: int, payload: bytes) -> None:
        rec = pack_record(payload)
        self._rec.write(rec)
        self._idx.write(f"{key}\t{self._pos}\n")
        self._pos += len(rec)

    def write_image(self, key: int, label: Union[float, Sequence[float]], data: bytes) -> None:
        self.write(key, pack_image(label, data, id=key))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_recordio(source: EncodedImageDataset, rec_path: str, idx_path: str) -> int:
    """Copy ``source``'s encoded images (keys 0..n-1) into a RecordIO pair; returns n."""
    with RecordIOWriter(rec_path, idx_path) as w:
        for i in range(len(source)):
            data, label, _ = source.read_encoded(i)
            w.write_image(i, label, data)
    return len(source)


def read_index(idx_path: str) -> Tuple[List[int], List[int]]:
    """``(keys, offsets)`` from a ``.idx`` file, in file order."""
    if not g_pathmgr.isfile(idx_path):
        raise FileNotFoundError(f"RecordIO index not found: {idx_path}")
    keys, offsets = [], []
    with g_pathmgr.open(idx_path, "r") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                k, off = line.split("\t")
                keys.append(int(k))
                offsets.append(int(off))
            except ValueError as e:
                raise ValueError(f"{idx_path}:{lineno}: expected 'key<TAB>offset', got "
                                 f"{line.rstrip()!r}") from e
    if not keys:
        raise FileNotFoundError(f"RecordIO index {idx_path} lists no records")
    return keys, offsets


class RecordIODataset(EncodedImageDataset):
    """Items ``(PIL image, label)`` of an indexed RecordIO pair (im2rec's ImageNet files too).

    The label is the first float label of each record, as an int.
    """

    def __init__(self, rec_path: str, idx_path: Optional[str] = None, on_bad_image: str = "skip",
                 channels: int = 3):
        super().__init__(on_bad_image, channels)
        self.rec_path = rec_path
        self.idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
        if not g_pathmgr.isfile(rec_path):
            raise FileNotFoundError(f"RecordIO file not found: {rec_path}")
        self.keys, self.offsets = read_index(self.idx_path)
        self._file: Optional[BinaryIO] = None
        self._pid: Optional[int] = None

    def _handle(self) -> BinaryIO:
        if self._file is None or self._pid != os.getpid():
            self._file = g_pathmgr.open(self.rec_path, "rb")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, None

    def _num_records(self) -> int:
        return len(self.offsets)

    def _read_record(self, j: int) -> Tuple[bytes, int, str]:
        f = self._handle()
        f.seek(self.offsets[j])
        name = f"{self.rec_path}#{self.keys[j]}"
        labels, data, _ = unpack_image(read_record(f, name))
        return data, int(labels[0]), name

    def __repr__(self) -> str:
        return f"RecordIODataset({self.rec_path!r}, {len(self.offsets)} records)"
