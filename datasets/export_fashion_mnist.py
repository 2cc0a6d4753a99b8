#!/usr/bin/env python
"""Write the embedded Fashion-MNIST set as an image folder: OUT/train/<class>/*.png and
OUT/test/<class>/*.png, 28x28 grey PNGs (the original images, not padded).

A real small-image folder for trying the "your own data" path (README) without downloading
anything:

    python datasets/export_fashion_mnist.py /tmp/fmnist_png [--train-per-class 1000]
        [--test-per-class 200]

Class folders are named ``<label>_<name>`` so their sorted order is the label order. OUT/train
and OUT/test must be new or empty (files of an earlier export would stay and mix in); a user
mistake ends in one ``error:`` line and exit status 2.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slimdet.data.fashion_mnist import CLASSES, load_fashion_mnist  # noqa: E402
from slimdet.data.in_memory import stratified_subset  # noqa: E402
from slimdet.engine.defaults import run_cli  # noqa: E402
from slimdet.utils.file_io import OutputError  # noqa: E402


def check_output(out: str) -> None:
    """``out`` can take a fresh export: not a file, and no files in its train/ or test/ (an
    earlier export's images would stay beside the new ones, so "N images" would be wrong)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"{out} is a file; give a folder's path (train/ and test/ are made in it)")
    for split in ("train", "test"):
        folder = os.path.join(out, split)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise OutputError(f"{folder} is a file; give another output folder")
        if os.path.isdir(folder):
            count = sum(len(files) for _, _, files in os.walk(folder))
            if count:
                raise OutputError(f"{folder} already holds {count} file{'s' * (count != 1)}, which "
                                  "would stay beside the new export: delete it or give "
                                  "another output folder")


def export(out: str, split: str, per_class: int) -> int:
    images, labels = load_fashion_mnist(split)
    if per_class:
        keep = stratified_subset(labels, per_class * len(CLASSES))
        images, labels = images[keep], labels[keep]
    folders = [f"{i}_" + name.replace("/", "_").replace(" ", "_") for i, name in enumerate(CLASSES)]
    try:
        for f in folders:
            os.makedirs(os.path.join(out, split, f), exist_ok=True)
        for n, (image, label) in enumerate(zip(images, labels.tolist())):
            pixels = image[0, 2:-2, 2:-2].numpy()  # the loader pads 28 -> 32; the files are 28 px
            path = os.path.join(out, split, folders[label], f"{n:05d}.png")
            Image.fromarray(np.ascontiguousarray(pixels), "L").save(path)
    except OSError as e:  # no permission, disk full, a parent that is a file
        raise OutputError(f"cannot write the export into {out}: {e}") from e
    return len(images)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", help="output folder (train/ and test/ are made in it)")
    p.add_argument("--train-per-class", type=int, default=1000, help="0 = all 6000")
    p.add_argument("--test-per-class", type=int, default=200, help="0 = all 1000")
    args = p.parse_args(argv)
    for flag, n in (("--train-per-class", args.train_per_class),
                    ("--test-per-class", args.test_per_class)):
        if n < 0:
            p.error(f"{flag} must not be negative, got {n}")
    check_output(args.out)
    for split, n in (("train", args.train_per_class), ("test", args.test_per_class)):
        count = export(args.out, split, n)
        print(f"{os.path.join(args.out, split)}: {count} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
