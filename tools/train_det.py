#!/usr/bin/env python
"""Train / evaluate Mask R-CNN with a slimmable backbone (every width each iteration).

    python tools/train_det.py --config-file configs/detection/mask_rcnn_slim_R_50_FPN_1x.yaml \
        --num-gpus 8 MODEL.WEIGHTS slim_r50.pkl
    python tools/train_det.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth

Configs whose META_ARCHITECTURE is not SlimGeneralizedRCNN (e.g. a converted single width in
stock Detectron2, configs/detection/mask_rcnn_R_50_FPN_1x_converted.yaml) run with Detectron2's
DefaultTrainer (as slimdet.d2.DetectionTrainer: weights read without running code). Flags are
Detectron2's: --config-file --num-gpus --resume --eval-only KEY VALUE, and --overwrite: as with
tools/train_net.py, a start into an OUTPUT_DIR holding a previous run is refused unless it is
--resume (continue it) or --overwrite (replace it). A wrong file, key, value
or checkpoint ends in one line `error: ...` and exit status 2. The slimmable detector logs one
table of box and mask AP of every width.
"""
from slimdet.d2 import evaluate_detection, setup_detection, train_detection
from slimdet.engine import launch_cli, parse_tool_args
from slimdet.engine.defaults import train_argument_parser


def main(args):
    cfg = setup_detection(args)
    if args.eval_only:  # into OUTPUT_DIR/eval_<weights name>, with eval_results.json
        return evaluate_detection(cfg, args.resume)
    return train_detection(cfg, args.resume, getattr(args, "overwrite", False))


if __name__ == "__main__":
    args = parse_tool_args(train_argument_parser())
    print("Command Line Args:", args)
    launch_cli(main, args)
