"""RecordIO: the dmlc framing byte for byte, image payloads, the data set with workers."""
import hashlib
import io
import struct

import numpy as np
import pytest
import torch

from slimdet.data.datasets import FolderDataset, RecordIODataset, RecordIOWriter, write_recordio
from slimdet.data.datasets.recordio import pack_image, pack_record, read_record, unpack_image

MAGIC_LE = struct.pack("<I", 0xCED7230A)


def _header(cflag: int, length: int) -> bytes:
    return MAGIC_LE + struct.pack("<I", (cflag << 29) | length)


def test_framing_matches_the_published_layout():
    # A plain record: magic, length with cflag 0, payload, zero padding to 4 bytes.
    assert pack_record(b"abcdef") == _header(0, 6) + b"abcdef" + b"\0\0"
    assert pack_record(b"") == _header(0, 0)
    # A payload holding the magic word at an aligned offset is split there, the word dropped.
    payload = b"ABCD" + MAGIC_LE + b"xyz"
    assert pack_record(payload) == _header(1, 4) + b"ABCD" + _header(3, 3) + b"xyz" + b"\0"
    # Unaligned occurrences are not split.
    unaligned = b"AB" + MAGIC_LE + b"C"
    assert pack_record(unaligned) == _header(0, 7) + unaligned + b"\0"


@pytest.mark.parametrize("payload", [
    b"", b"a", b"abcd", b"abcdefg",
    MAGIC_LE, MAGIC_LE * 3, b"1234" + MAGIC_LE + b"5678" + MAGIC_LE,
    b"12" + MAGIC_LE + b"34", bytes(range(256)) * 3,
])
def test_records_round_trip_in_sequence(payload):
    buf = io.BytesIO(pack_record(payload) + pack_record(b"next") + pack_record(payload))
    assert read_record(buf) == payload
    assert read_record(buf) == b"next"
    assert read_record(buf) == payload
    assert buf.read() == b""


def test_bad_magic_names_the_record():
    with pytest.raises(ValueError, match="x.rec#3.*bad magic"):
        read_record(io.BytesIO(b"\0" * 16), "x.rec#3")


def test_image_header_single_and_multi_label():
    p = pack_image(7, b"JPEGDATA", id=12)
    assert struct.unpack_from("<IfQQ", p) == (0, 7.0, 12, 0)
    labels, data, id_ = unpack_image(p)
    assert labels.tolist() == [7.0] and data == b"JPEGDATA" and id_ == 12
    labels, data, _ = unpack_image(pack_image([1.0, 2.5, 3.0], b"IMG"))
    assert labels.tolist() == [1.0, 2.5, 3.0] and data == b"IMG"


def test_dataset_equals_folder_and_reads_split_records(image_folder, tmp_path):
    folder = FolderDataset(image_folder)
    rec, idx = str(tmp_path / "t.rec"), str(tmp_path / "t.idx")
    assert write_recordio(folder, rec, idx) == len(folder)
    ds = RecordIODataset(rec, idx)
    assert len(ds) == len(folder)
    for i in range(len(folder)):
        (a, la), (b, lb) = folder[i], ds[i]
        assert la == lb
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # A payload that the writer must split (magic word at an aligned offset) reads back whole.
    tricky = tmp_path / "tricky"
    with RecordIOWriter(str(tricky) + ".rec", str(tricky) + ".idx") as w:
        data, label, _ = folder.read_encoded(0)
        w.write(5, MAGIC_LE * 2 + b"pad!" + data)  # not an image payload: framing only
        w.write_image(9, label, data)
    ds2 = RecordIODataset(str(tricky) + ".rec")
    assert ds2.keys == [5, 9]
    with open(str(tricky) + ".rec", "rb") as f:
        f.seek(ds2.offsets[0])
        assert read_record(f) == MAGIC_LE * 2 + b"pad!" + data
    img, lbl = ds2[1]
    np.testing.assert_array_equal(np.asarray(img), np.asarray(folder[0][0]))
    assert lbl == label


def test_num_workers_two_yields_each_sample_once(image_folder, tmp_path):
    rec, idx = str(tmp_path / "t.rec"), str(tmp_path / "t.idx")
    write_recordio(FolderDataset(image_folder), rec, idx)
    ds = RecordIODataset(rec, idx)

    def collate(batch):
        return [(hashlib.sha1(np.asarray(im).tobytes()).hexdigest(), y) for im, y in batch]

    expected = sorted(collate([ds[i] for i in range(len(ds))]))  # main process holds a handle
    assert len({h for h, _ in expected}) == len(ds)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    assert sorted(x for batch in loader for x in batch) == expected


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.rec"):
        RecordIODataset(str(tmp_path / "nothere.rec"))
    (tmp_path / "a.rec").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="a.idx"):
        RecordIODataset(str(tmp_path / "a.rec"))
    (tmp_path / "a.idx").write_text("0\tnot-a-number\n")
    with pytest.raises(ValueError, match="a.idx:1"):
        RecordIODataset(str(tmp_path / "a.rec"))
