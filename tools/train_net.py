#!/usr/bin/env python
"""Train (pre-training, supervised slimmable, linear probe) or evaluate with one config.

    python tools/train_net.py --config-file configs/slimclr_mocov2_800ep.yaml [--num-gpus 8]
        [--num-machines N --machine-rank R --dist-url tcp://HOST:PORT] [--resume] [--eval-only]
        [KEY VALUE ...]
"""
from slimdet.engine import default_argument_parser, launch_cli, setup
from slimdet.engine.trainer import SlimTrainer


def main(args):
    cfg = setup(args)
    trainer = SlimTrainer(cfg)
    if args.eval_only:
        trainer.load_for_evaluation(resume=args.resume)
        return SlimTrainer.test(cfg, trainer.method)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    launch_cli(main, default_argument_parser().parse_args())
