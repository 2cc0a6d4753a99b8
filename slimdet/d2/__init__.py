"""Detectron2 integration: slimmable backbone, multi-width Mask R-CNN training, per-width COCO AP.

Importing this package registers ``build_slim_resnet_fpn_backbone`` (Detectron2's
``BACKBONE_REGISTRY``), the ``SlimGeneralizedRCNN`` meta-architecture and the tiny COCO set
(``tiny_coco_train`` / ``tiny_coco_val``: files that ``datasets/prepare_tiny_coco.py`` wrote at
set-up; nothing is downloaded on import).
"""
from .backbone import (PerWidthNorm, SlimResNetBackbone, build_slim_resnet_backbone,
                       build_slim_resnet_fpn_backbone, make_norms_switchable, pad_channels)
from .checkpoint import (SLIM_D2_PREFIX, SafeDetectionCheckpointer, SlimDetectionCheckpointer,
                         stock_d2_overrides, to_slim_d2_state, to_stock_d2_state)
from .config import (add_slim_det_config, eval_widths, get_slim_det_cfg, is_slimmable,
                     load_det_cfg, validate_det_cfg, validate_slim_det_cfg)
from .datasets import TINY_COCO_TRAIN, TINY_COCO_VAL, register_tiny_coco, tiny_coco_source
from .defaults import (detection_trainer_class, eval_output_dir, evaluate_detection,
                       setup_detection, train_detection)
from .evaluation import evaluate_widths, format_width_table
from .meta_arch import SlimGeneralizedRCNN
from .trainer import DetectionTrainer, SlimDetTrainer

register_tiny_coco()

__all__ = [
    "PerWidthNorm", "SlimResNetBackbone", "build_slim_resnet_backbone",
    "build_slim_resnet_fpn_backbone", "make_norms_switchable", "pad_channels",
    "SLIM_D2_PREFIX", "SafeDetectionCheckpointer", "SlimDetectionCheckpointer",
    "stock_d2_overrides", "to_slim_d2_state", "to_stock_d2_state",
    "add_slim_det_config", "eval_widths", "get_slim_det_cfg", "is_slimmable", "load_det_cfg",
    "validate_det_cfg", "validate_slim_det_cfg",
    "TINY_COCO_TRAIN", "TINY_COCO_VAL", "register_tiny_coco", "tiny_coco_source",
    "evaluate_widths", "format_width_table",
    "SlimGeneralizedRCNN", "DetectionTrainer", "SlimDetTrainer", "detection_trainer_class",
    "setup_detection", "train_detection", "evaluate_detection", "eval_output_dir",
]
