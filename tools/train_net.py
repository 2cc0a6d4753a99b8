#!/usr/bin/env python
"""Train (pre-training, supervised slimmable, linear probe) or evaluate with one config.

    python tools/train_net.py --config-file configs/slimclr_mocov2_800ep.yaml [--num-gpus 8]
        [--num-machines N --machine-rank R --dist-url tcp://HOST:PORT]
        [--resume | --overwrite] [--eval-only] [KEY VALUE ...]

Everything is checked before OUTPUT_DIR is written to; a start into a folder that holds a
previous run needs --resume (continue it) or --overwrite (replace it).
"""
from slimdet.engine import (evaluate_only, launch_cli, parse_tool_args, setup, start_run_files,
                            train_argument_parser)
from slimdet.engine.trainer import SlimTrainer


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return evaluate_only(cfg, resume=args.resume)
    trainer = SlimTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    start_run_files(cfg, overwrite=args.overwrite)
    return trainer.train()


if __name__ == "__main__":
    launch_cli(main, parse_tool_args(train_argument_parser()))
