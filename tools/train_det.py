#!/usr/bin/env python
"""Train / evaluate Mask R-CNN with a slimmable backbone (every width each iteration).

    python tools/train_det.py --config-file configs/detection/mask_rcnn_slim_R_50_FPN_1x.yaml \
        --num-gpus 8 MODEL.WEIGHTS slim_r50.pkl
    python tools/train_det.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth

Configs whose META_ARCHITECTURE is not SlimGeneralizedRCNN (e.g. a converted single width in
stock Detectron2, configs/detection/mask_rcnn_R_50_FPN_1x_converted.yaml) run with Detectron2's
own DefaultTrainer. Flags are Detectron2's: --config-file --num-gpus --resume --eval-only KEY VALUE.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.engine import DefaultTrainer, default_setup  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.utils import comm  # noqa: E402

import slimdet  # noqa: E402,F401  (warning filters)
from slimdet.d2 import (SlimDetectionCheckpointer, SlimDetTrainer, format_width_table,  # noqa: E402
                        get_slim_det_cfg, prepare_tiny_coco, validate_slim_det_cfg)
from slimdet.d2.tiny_coco import TRAIN, VAL  # noqa: E402
from slimdet.engine import default_argument_parser, launch  # noqa: E402


class StockTrainer(DefaultTrainer):
    """Detectron2's trainer with the pure-Python COCO evaluation this install supports."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or cfg.OUTPUT_DIR,
                             use_fast_impl=False)


def setup(args):
    cfg = get_slim_det_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("slimdet").warning("CUDA is not available: MODEL.DEVICE cpu")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    if cfg.MODEL.META_ARCHITECTURE == "SlimGeneralizedRCNN":
        validate_slim_det_cfg(cfg)
    if comm.is_main_process() and set(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST) & {TRAIN, VAL}:
        logging.getLogger("slimdet").info("tiny COCO set: %s", prepare_tiny_coco())
    comm.synchronize()
    return cfg


def main(args):
    cfg = setup(args)
    slim = cfg.MODEL.META_ARCHITECTURE == "SlimGeneralizedRCNN"
    trainer_cls = SlimDetTrainer if slim else StockTrainer
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        checkpointer_cls = SlimDetectionCheckpointer if slim else DetectionCheckpointer
        checkpointer_cls(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS,
                                                                       resume=args.resume)
        results = trainer_cls.test(cfg, model)
    else:
        trainer = trainer_cls(cfg)
        trainer.resume_or_load(resume=args.resume)
        # DefaultTrainer's EvalHook evaluates (every width) after the last iteration.
        results = trainer.train() if slim else (trainer.train() or trainer._last_eval_results)
    if slim and comm.is_main_process():
        table_input = results if cfg.DATASETS.TEST and len(cfg.DATASETS.TEST) > 1 else \
            {cfg.DATASETS.TEST[0]: results}
        print("AP of every width:\n" + format_width_table(table_input), flush=True)
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
