"""LMDB image data sets: one key per image holding its original encoded bytes and label.

Layout (written by ``write_lmdb`` / ``datasets/prepare_lmdb.py``):
  * ``b"%08d" % i`` -> ``<i4 label><u2 len(name)><name utf-8><encoded image bytes>``; keeping
    the original bytes makes an LMDB decode pixel-equal to the folder it came from;
  * ``b"__progress__"`` -> number of images committed (written in the same transaction as them,
    so an interrupted conversion resumes exactly where it stopped);
  * ``b"__labels__"`` -> int32 array of all labels (for stratified subsets without a scan);
  * ``b"__fingerprint__"`` -> hash of the source (name, label) list, checked on resume;
  * ``b"__meta__"`` -> JSON ``{"length", "classes", "fingerprint"}``, written only once every
    image is in (readers refuse an LMDB without it).

Readers share one read-only environment per (process, LMDB): py-lmdb refuses to open the same
files twice in one process, and two data sets often read one LMDB (the training set is also the
kNN memory bank of its test loader). An environment must not cross a ``fork``, so a DataLoader
worker closes the copies it inherited and opens its own (the reference code opened one in
``__init__`` and only worked with ``num_workers=0``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
from iopath.common.file_io import g_pathmgr

from .base import DatasetError, EncodedImageDataset

if TYPE_CHECKING:
    from .folder import FolderDataset

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<iH")
META_KEY, PROGRESS_KEY, LABELS_KEY = b"__meta__", b"__progress__", b"__labels__"
FINGERPRINT_KEY = b"__fingerprint__"


def image_key(i: int) -> bytes:
    return b"%08d" % i


def encode_value(data: bytes, label: int, name: str) -> bytes:
    raw_name = name.encode("utf-8")
    return _HEADER.pack(label, len(raw_name)) + raw_name + data


def decode_value(value: bytes) -> Tuple[bytes, int, str]:
    label, n = _HEADER.unpack_from(value)
    start = _HEADER.size
    return bytes(value[start + n:]), label, bytes(value[start:start + n]).decode("utf-8")


def samples_fingerprint(items: Iterable[Tuple[str, int]]) -> str:
    """Hash of the (name, label) list: a resumed conversion must continue the same list."""
    h = hashlib.sha1()
    for name, label in items:
        h.update(f"{name}\t{label}\n".encode("utf-8"))
    return h.hexdigest()


def _open_env(path: str, readonly: bool, map_size: int = 1 << 30):
    import lmdb

    local = g_pathmgr.get_local_path(path)
    if readonly:
        return lmdb.open(local, subdir=os.path.isdir(local), readonly=True, lock=False,
                         readahead=False, meminit=False, max_readers=1024)
    return lmdb.open(local, subdir=True, map_size=map_size, readahead=False, meminit=False)


# Real local path of an LMDB -> (pid of the process that opened it, read-only environment).
_READERS: Dict[str, Tuple[int, Any]] = {}
_READERS_LOCK = threading.Lock()


def _reader(key: str):
    """This process's read-only environment of the LMDB at (real local path) ``key``."""
    with _READERS_LOCK:
        entry = _READERS.get(key)
        if entry is not None and entry[0] == os.getpid():
            return entry[1]
        if entry is not None:
            # Inherited through fork: unusable here, and it blocks opening the files again in
            # this process. Closing the child's copy (read-only, no lock file) leaves the
            # parent's environment untouched.
            entry[1].close()
            del _READERS[key]
        env = _open_env(key, readonly=True)
        _READERS[key] = (os.getpid(), env)
        return env


def _close_reader(key: str) -> None:
    """Close the shared read-only environment of ``key`` (readers reopen it when they read)."""
    with _READERS_LOCK:
        entry = _READERS.pop(key, None)
    if entry is not None:
        entry[1].close()


def _reader_key(path: str) -> str:
    return os.path.realpath(g_pathmgr.get_local_path(path))


def _not_an_lmdb(path: str, detail: str) -> DatasetError:
    return DatasetError(f"{path} is not an LMDB made by datasets/prepare_lmdb.py ({detail}); "
                        "make one with: python datasets/prepare_lmdb.py IMAGE_FOLDER OUT.lmdb "
                        "(an image folder itself is read as folder:PATH)")


class LMDBDataset(EncodedImageDataset):
    """Items ``(PIL image, label)`` from an LMDB written by ``write_lmdb``."""

    def __init__(self, path: str, on_bad_image: str = "skip", channels: int = 3):
        super().__init__(on_bad_image, channels)
        self.path = path
        if not g_pathmgr.exists(path):
            raise FileNotFoundError(f"LMDB not found: {path} (make it with "
                                    "datasets/prepare_lmdb.py)")
        self._key = _reader_key(path)
        if os.path.isdir(self._key) and not os.path.isfile(os.path.join(self._key, "data.mdb")):
            raise _not_an_lmdb(path, "a folder without data.mdb")
        if os.path.isfile(self._key) and os.path.getsize(self._key) == 0:
            raise _not_an_lmdb(path, "an empty file")
        import lmdb

        try:
            env = _reader(self._key)
            with env.begin() as txn:
                meta = txn.get(META_KEY)
                progress = txn.get(PROGRESS_KEY)
                labels = txn.get(LABELS_KEY)
            entries = env.stat()["entries"]
        except lmdb.Error as e:
            # py-lmdb's message starts with the path, which ours already names.
            raise _not_an_lmdb(path, str(e).split(": ", 1)[-1]) from e
        if meta is None:
            _close_reader(self._key)  # a rerun of prepare_lmdb.py in this process writes to it
            if progress is None and entries:
                raise _not_an_lmdb(path, "an LMDB without slimdet's __meta__ / __progress__ "
                                         "keys")
            done = int(progress) if progress is not None else 0
            raise DatasetError(f"LMDB {path} is incomplete ({done} images written): rerun "
                               "datasets/prepare_lmdb.py to resume the conversion")
        meta = json.loads(meta)
        self.length: int = meta["length"]
        self.classes: List[str] = meta["classes"]
        self._labels = np.frombuffer(labels, dtype=np.int32).tolist() if labels else None

    def _txn(self):
        return _reader(self._key).begin(buffers=True)

    def close(self) -> None:
        """Close this process's environment of the LMDB, shared by every reader of it (they
        reopen it when they next read)."""
        _close_reader(self._key)

    def _num_records(self) -> int:
        return self.length

    def _read_record(self, j: int) -> Tuple[bytes, int, str]:
        with self._txn() as txn:
            value = txn.get(image_key(j))
            if value is None:
                raise KeyError(f"LMDB {self.path}: key {image_key(j)!r} missing")
            data, label, name = decode_value(value)
        return data, label, f"{self.path}:{name}"

    def record_labels(self) -> Optional[List[int]]:
        return self._labels

    def __repr__(self) -> str:
        return f"LMDBDataset({self.path!r}, {self.length} images)"


def write_lmdb(source: "FolderDataset", path: str, commit_every: int = 1000,
               max_new: Optional[int] = None, progress: bool = True) -> int:
    """Copy the encoded images of an image folder into an LMDB at ``path``; resumable.

    Images are committed in chunks of ``commit_every`` together with the progress counter, so
    a killed conversion restarts at the first uncommitted image. ``max_new`` stops after that
    many new images (incremental conversion in time-limited jobs). Returns the number of images
    committed. The map grows by doubling when full, so no size has to be guessed up front.
    """
    import lmdb
    from tqdm import tqdm

    samples = source.samples
    n = len(samples)
    fingerprint = samples_fingerprint(samples)
    if g_pathmgr.exists(path) and not g_pathmgr.isdir(path):
        raise DatasetError(f"LMDB output {path} is a file; the LMDB is written as a folder, so "
                           "give a new folder's path")
    if g_pathmgr.isdir(path) and "data.mdb" not in g_pathmgr.ls(path) and g_pathmgr.ls(path):
        # Never write an LMDB into, say, the image folder itself.
        raise DatasetError(f"LMDB output {path} is a folder that holds other files and no LMDB "
                           "(data.mdb); give a new or empty folder's path")
    try:
        g_pathmgr.mkdirs(path)
        # py-lmdb allows one environment per LMDB and process: readers of this one in this
        # process reopen theirs when they next read.
        _close_reader(_reader_key(path))
        env = _open_env(path, readonly=False)
    except (OSError, lmdb.Error) as e:
        raise DatasetError(f"cannot write the LMDB {path}: {e}") from e
    try:
        with env.begin() as txn:
            complete = txn.get(META_KEY) is not None
            old = txn.get(FINGERPRINT_KEY)
            done = int(txn.get(PROGRESS_KEY) or 0)
        if old is not None and old.decode() != fingerprint:
            raise DatasetError(f"LMDB {path} was written from a different image list than "
                               f"{source.root}; delete it (or pass --overwrite) to start over")
        if complete:
            logger.info("LMDB %s is already complete (%d images)", path, done)
            return done
        stop = n if max_new is None else min(n, done + max_new)
        with tqdm(total=n, initial=done, unit="img", desc=path, disable=not progress) as bar:
            for s in range(done, stop, commit_every):
                chunk = []
                for i in range(s, min(stop, s + commit_every)):
                    data, label, _ = source.read_encoded(i)
                    chunk.append((image_key(i), encode_value(data, label, samples[i][0])))
                while True:
                    try:
                        with env.begin(write=True) as txn:
                            for k, v in chunk:
                                txn.put(k, v)
                            txn.put(PROGRESS_KEY, str(s + len(chunk)).encode())
                            txn.put(FINGERPRINT_KEY, fingerprint.encode())
                        break
                    except lmdb.MapFullError:  # the aborted chunk is retried in a larger map
                        env.set_mapsize(env.info()["map_size"] * 2)
                bar.update(len(chunk))
                done = s + len(chunk)
        if done == n:
            labels = np.asarray([label for _, label in samples], dtype=np.int32)
            with env.begin(write=True) as txn:
                txn.put(LABELS_KEY, labels.tobytes())
                txn.put(META_KEY, json.dumps({"length": n, "classes": list(source.classes),
                                              "fingerprint": fingerprint}).encode())
        return done
    finally:
        env.close()
