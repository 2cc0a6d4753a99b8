"""On-disk image data sets (folders, LMDB, RecordIO), registered by name in the catalog.

Importing this package registers ``imagenet_train`` / ``imagenet_val``; their storage format is
picked by ``cfg.DATASETS.FORMAT`` (see ``builtin.py``), so a config switches between folders,
LMDB and RecordIO without code changes.
"""
from .base import BadImageError, EncodedImageDataset, decode_image
from .builtin import build_imagenet, register_folder, register_lmdb, register_recordio
from .folder import FolderDataset, scan_image_folder
from .lmdb_dataset import LMDBDataset, write_lmdb
from .recordio import RecordIODataset, RecordIOWriter, write_recordio

__all__ = [
    "BadImageError", "EncodedImageDataset", "decode_image", "build_imagenet", "register_folder",
    "register_lmdb", "register_recordio", "FolderDataset", "scan_image_folder", "LMDBDataset",
    "write_lmdb", "RecordIODataset", "RecordIOWriter", "write_recordio",
]
