"""Checkpoints in and out (docs/checkpoints.md).

- :mod:`.format`: read any supported file safely, recognise its layout, rename it to slimdet's
  keys, infer the network, check and load it into a model (one error type,
  :class:`CheckpointError`).
- :mod:`.checkpointer`: atomic writes, the trainer's checkpointer, periodic checkpoints.
- :mod:`.export`, :mod:`.recalibrate_bn`: one width as a torchvision ResNet; BN statistics.
"""
from .checkpointer import AtomicSaving, PeriodicCheckpointer, SlimCheckpointer, restore_optimizer
from .format import (ALL_PARTS, CLASSES_FIELD, TRUST_HINT, Checkpoint, CheckpointError, LoadReport,
                     ResNetArchitecture, backbone_from_checkpoint, check_architecture,
                     classes_of_checkpoint, check_keys, count_parts,
                     detect_layout, infer_architecture, load_state, load_weights,
                     read_checkpoint, read_file, safe_globals, single_width_name)

__all__ = [
    "AtomicSaving", "PeriodicCheckpointer", "SlimCheckpointer", "restore_optimizer",
    "ALL_PARTS", "CLASSES_FIELD", "TRUST_HINT", "Checkpoint", "CheckpointError", "LoadReport",
    "ResNetArchitecture", "backbone_from_checkpoint", "check_architecture", "classes_of_checkpoint", "check_keys", "count_parts",
    "detect_layout", "infer_architecture", "load_state", "load_weights",
    "read_checkpoint", "read_file", "safe_globals", "single_width_name",
]
