"""ImageNet-style image folders: ``ROOT/<class>/<image>`` with classes in sorted order.

The split folder (``ROOT/train``, ``ROOT/val``) is the data set root; ``val`` must be sorted
into class folders too (the usual ``valprep.sh`` layout). Paths go through iopath's
``g_pathmgr`` so a registered remote handler (``manifold://``, ``s3://`` ...) works unchanged.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from iopath.common.file_io import g_pathmgr

from .base import BadImageError, EncodedImageDataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _hidden(name: str) -> bool:
    # .ipynb_checkpoints, .DS_Store, .git ...: made by tools, never a class or an image
    return name.startswith(".")


def _check_class_folder(root: str, cls: str, exts: Tuple[str, ...]) -> None:
    """A class folder without an image of its own is allowed empty (a split that lacks a
    class keeps the others' labels), not when it holds files or images in subfolders: images
    one level too deep, or of an extension not read, would leave the class silently empty."""
    folder = os.path.join(root, cls)
    entries = [e for e in g_pathmgr.ls(folder) if not _hidden(e)]
    deeper = []
    for e in entries:
        sub = os.path.join(folder, e)
        if g_pathmgr.isdir(sub):
            deeper += [f"{e}/{f}" for f in g_pathmgr.ls(sub) if f.lower().endswith(exts)]
    if deeper:
        raise FileNotFoundError(
            f"class folder {folder} holds no image itself but {len(deeper)} in its subfolders "
            f"(e.g. {cls}/{sorted(deeper)[0]}): images must lie directly in "
            f"{root}/<class>/, one folder level per class")
    files = sorted(e for e in entries if not g_pathmgr.isdir(os.path.join(folder, e)))
    if files:
        found = sorted({os.path.splitext(f)[1].lower() or "(none)" for f in files})
        raise FileNotFoundError(
            f"class folder {folder} holds {len(files)} file(s) (e.g. {files[0]}) but no image: "
            f"images are read by their extension ({', '.join(exts)}), these have "
            f"{', '.join(found[:5])}")


def scan_image_folder(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS
                      ) -> Tuple[List[str], List[Tuple[str, int]]]:
    """``(classes, [(relative path, label), ...])``, both sorted, of an image-folder tree.

    Classes are the folders of ``root``, hidden ones (``.ipynb_checkpoints``) aside; images
    are the files of a class folder with an image extension. Raises ``FileNotFoundError``
    naming the folder when ``root`` is missing or holds no image in any class folder, and when
    a class folder has no image but holds other files or images in subfolders: one clear error
    instead of a data set that is empty, or lacks a class, without a word.
    """
    if not g_pathmgr.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(d for d in g_pathmgr.ls(root)
                     if not _hidden(d) and g_pathmgr.isdir(os.path.join(root, d)))
    samples: List[Tuple[str, int]] = []
    exts = tuple(e.lower() for e in extensions)
    for label, cls in enumerate(classes):
        files = sorted(f for f in g_pathmgr.ls(os.path.join(root, cls))
                       if f.lower().endswith(exts) and not _hidden(f))
        if not files:
            _check_class_folder(root, cls, exts)
        samples.extend((f"{cls}/{f}", label) for f in files)
    if not samples:
        raise FileNotFoundError(
            f"no images ({', '.join(exts)}) in class folders under {root}; expected "
            f"{root}/<class>/<image> (found {len(classes)} class folders)")
    return classes, samples


class FolderDataset(EncodedImageDataset):
    """Images in ``root/<class>/*``; labels are the sorted class-folder order (as torchvision's
    ``ImageFolder`` and DALI's file reader assign them)."""

    def __init__(self, root: str, on_bad_image: str = "skip",
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, channels: int = 3):
        super().__init__(on_bad_image, channels)
        self.root = root
        self.classes, self.samples = scan_image_folder(root, extensions)

    def _num_records(self) -> int:
        return len(self.samples)

    def _read_record(self, j: int) -> Tuple[bytes, int, str]:
        rel, label = self.samples[j]
        path = os.path.join(self.root, rel)
        try:
            with g_pathmgr.open(path, "rb") as f:
                return f.read(), label, path
        except OSError as e:
            # A directory or a broken link named like an image, a file deleted or unreadable
            # since the scan: one bad record under DATALOADER.ON_BAD_IMAGE, not a crash. The
            # scan does not stat every file (ImageNet: 1.28 M files, often on network disks).
            raise BadImageError(f"cannot read image {path}: {e.strerror or e}", path) from e

    def record_labels(self) -> Optional[List[int]]:
        return [label for _, label in self.samples]

    def __repr__(self) -> str:
        return f"FolderDataset({self.root!r}, {len(self)} images, {len(self.classes)} classes)"
