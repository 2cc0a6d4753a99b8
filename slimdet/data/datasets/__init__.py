"""On-disk image data sets (folders, LMDB, RecordIO), registered by name in the catalog.

Importing this package registers the data set names ``folder:PATH``, ``lmdb:PATH`` and
``recordio:PATH`` and ``imagenet_train`` / ``imagenet_val`` (storage format picked by
``cfg.DATASETS.FORMAT``; see ``builtin.py``), so a config switches between folders, LMDB and
RecordIO, at any path, without code changes.
"""
from .base import BadImageError, DatasetError, EncodedImageDataset, decode_image
from .builtin import build_imagenet, register_folder, register_lmdb, register_recordio
from .folder import FolderDataset, scan_image_folder
from .lmdb_dataset import LMDBDataset, write_lmdb
from .recordio import RecordIODataset, RecordIOWriter, write_recordio

__all__ = [
    "BadImageError", "DatasetError", "EncodedImageDataset", "decode_image", "build_imagenet", "register_folder",
    "register_lmdb", "register_recordio", "FolderDataset", "scan_image_folder", "LMDBDataset",
    "write_lmdb", "RecordIODataset", "RecordIOWriter", "write_recordio",
]
