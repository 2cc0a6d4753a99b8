#!/usr/bin/env python
"""Write one width of a slimmable checkpoint as a plain torchvision-style ResNet state dict.

    python tools/export_width.py --config-file configs/lincls/mocov2.yaml \
        --weights output/.../model_final.pth --width 0.5 --output r50_w0.5.pth [KEY VALUE ...]

--weights takes slimdet checkpoints and reference-implementation files; every weight the export
uses (backbone, and the classifier of a probe / supervised config) must be in it. The output holds
the bare state dict (torchvision names; width 1.0 of a ResNet-50 loads strictly into
torchvision.models.resnet50() when it has an fc: from a probe / supervised model, or a fresh one
with --init-fc-classes for a self-supervised model). A file that needs more than tensors to be
unpickled is refused unless MODEL.WEIGHTS_TRUSTED True is given (only for files you trust).
"""
import argparse
import logging
import sys

import torch

from slimdet.checkpoint import CheckpointError, atomic_write, load_weights
from slimdet.checkpoint.export import export_width_state_dict
from slimdet.engine import load_cfg, run_cli
from slimdet.modeling import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--weights", required=True, help="checkpoint to export from")
    parser.add_argument("--width", type=float, required=True, help="width multiplier to export")
    parser.add_argument("--output", required=True, help="where to write the state dict")
    parser.add_argument("--init-fc-classes", type=int, default=0,
                        help="add a freshly initialised fc of this size when the model has none")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)  # stderr: errors only
    cfg = load_cfg(args.config_file, args.opts)
    method = build_model(cfg)
    load_weights(method, args.weights, method.eval_parts(), "export_width",
                 trusted=cfg.MODEL.WEIGHTS_TRUSTED)
    if args.width not in method.widths:
        raise CheckpointError(f"--width {args.width:g}: {args.weights!r} was trained at widths "
                              f"{method.widths} only")
    state = export_width_state_dict(method, args.width, args.init_fc_classes)
    atomic_write(args.output, lambda f: torch.save(state, f))
    print(f"wrote width {args.width:g} ({len(state)} tensors, "
          f"{sum(v.numel() for k, v in state.items() if 'running' not in k and 'num_batches' not in k) / 1e6:.2f} M "
          f"parameters) to {args.output}")


if __name__ == "__main__":
    run_cli(main)
