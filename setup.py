#!/usr/bin/env python
"""slimdet: slimmable contrastive self-supervised pre-training (SlimCLR) on Detectron2."""
from setuptools import find_packages, setup

setup(
    name="slimdet",
    version="0.1.0",
    description="SlimCLR: one self-supervised run, many weight-sharing ResNets, Detectron2 transfer",
    packages=find_packages(exclude=("tests", "tests.*", "configs", "tools", "benchmarks")),
    python_requires=">=3.9",
    # torch/torchvision/detectron2 are installed by scripts/setup_env.sh (pinned, patched);
    # they are listed here so `pip check` knows about them.
    install_requires=[
        "torch", "torchvision", "fvcore", "iopath", "yacs", "pycocotools", "lmdb",
        "tensorboard", "matplotlib", "tabulate", "termcolor", "numpy", "Pillow",
    ],
    extras_require={
        "dali": ["nvidia-dali-cuda110==1.34.0"],
        # tools/export_width.py --format onnx (onnx writes the file, onnxruntime checks it).
        "onnx": ["onnx", "onnxruntime"],
        "dev": ["pytest", "pytest-xdist", "pytest-timeout"],
    },
)
