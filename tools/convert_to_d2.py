#!/usr/bin/env python
"""Convert a slimmable pre-training checkpoint to Detectron2 weights.

    # one width as a stock Detectron2 ResNet (.pkl), for stock mask_rcnn_R_50_FPN_1x
    python tools/convert_to_d2.py CKPT --width 0.5 -o r50_w0.5.pkl
    # all widths, for our slimmable detector (configs/detection/mask_rcnn_slim_R_50_FPN_1x.yaml)
    python tools/convert_to_d2.py CKPT --slimmable -o slim_r50.pkl

CKPT is a slimdet checkpoint (``{"model": ...}``, the student backbone under ``backbone.`` /
``encoder_q.backbone.`` / ...) or a reference-implementation checkpoint (SPEC §8,
``module.encoder_q.features.N...``). The converter prints where it found the backbone, what it
wrote and which checkpoint keys it dropped (heads, momentum encoder, queue, classifier).
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from slimdet.d2.checkpoint import (FoundBackbone, build_resnet_from_checkpoint,  # noqa: E402
                                   find_backbone, stock_d2_overrides,
                                   to_slim_d2_state, to_stock_d2_state)
from slimdet.checkpoint import atomic_write  # noqa: E402
from slimdet.checkpoint.reference import read_checkpoint_file  # noqa: E402
from slimdet.modeling.backbone import SlimResNet  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("input", nargs="?", help="pre-training checkpoint (.pth / .pth.tar)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--width", type=float, help="export this width as a stock Detectron2 ResNet")
    mode.add_argument("--slimmable", action="store_true",
                      help="export every width for build_slim_resnet_fpn_backbone")
    p.add_argument("-o", "--output", required=True, help="output .pkl")
    p.add_argument("--widths", type=float, nargs="+", default=None,
                   help="width list of the checkpoint (default: inferred from its BN sizes)")
    p.add_argument("--random-init", type=int, metavar="DEPTH", default=None,
                   help="no checkpoint: convert a randomly initialised slimmable ResNet-DEPTH "
                        "(demos and tests only; its detection AP means nothing)")
    args = p.parse_args(argv)
    if (args.input is None) == (args.random_init is None):
        p.error("give either a checkpoint path or --random-init DEPTH")
    return args


def _list(keys: List[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _group(keys: List[str], prefix: str) -> str:
    """``module.encoder_k.* (1113 keys), module.encoder_q.fc.* (4 keys), module.queue``."""
    groups: Dict[str, List[str]] = {}
    for k in keys:
        if prefix and k.startswith(prefix):  # e.g. the classifier next to the backbone
            parts = k[len(prefix):].split(".")
            group = prefix + parts[0] if len(parts) > 1 else k
        else:
            parts = k.split(".")
            group = ".".join(parts[:2]) if len(parts) > 2 else k
        groups.setdefault(group, []).append(k)
    return ", ".join(members[0] if len(members) == 1 else f"{group}.* ({len(members)} keys)"
                     for group, members in groups.items())


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.random_init is not None:
        widths = args.widths or [1.0, 0.75, 0.5, 0.25]
        resnet = SlimResNet(depth=args.random_init, widths=widths).eval()
        found = FoundBackbone(resnet.state_dict(), "<random init>", "slimdet")
        source = f"random-init slimmable ResNet-{args.random_init}"
    else:
        found = find_backbone(read_checkpoint_file(args.input))
        resnet = build_resnet_from_checkpoint(found, args.widths)
        source = args.input
        print(f"found a slimmable ResNet-{resnet.depth} (widths {resnet.widths}) under prefix "
              f"'{found.prefix}' ({found.layout} layout, {len(found.state)} tensors)")
        if found.dropped:
            print(f"dropped {len(found.dropped)} checkpoint keys that are not the student "
                  f"backbone: {_group(found.dropped, found.prefix)}")

    if args.slimmable:
        state = to_slim_d2_state(resnet)
        meta = {"widths": resnet.widths, "depth": resnet.depth}
        # Exact Detectron2 parameter names: no name-matching heuristics needed (or wanted).
        out = {"model": state, "__author__": f"slimdet convert_to_d2 --slimmable ({source})",
               "matching_heuristics": False, "slimdet": meta}
        hint = (f"use it with MODEL.WEIGHTS {args.output} MODEL.RESNETS.DEPTH {resnet.depth} "
                f"MODEL.SLIM.WIDTHS \"{resnet.widths}\"")
    else:
        if args.width not in resnet.widths:
            print(f"error: width {args.width} is not one of the checkpoint's widths {resnet.widths}",
                  file=sys.stderr)
            return 2
        state, dropped = to_stock_d2_state(resnet, args.width)
        counters = [k for k in dropped if k.endswith("num_batches_tracked")]
        others = [k for k in dropped if k not in counters]
        if counters:
            print(f"not exported: {len(counters)} BN batch counters (num_batches_tracked; "
                  "Detectron2's BN does not need them)")
        if others:
            print(f"not exported from the width-{args.width:g} network: {_list(others)}")
        out = {"model": state, "__author__": f"slimdet convert_to_d2 --width {args.width:g} ({source})",
               "matching_heuristics": True,
               "slimdet": {"width": args.width, "widths": resnet.widths, "depth": resnet.depth}}
        hint = ("use it in stock Detectron2 with MODEL.WEIGHTS " + args.output + " " +
                " ".join(stock_d2_overrides(resnet, args.width)))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.output, lambda f: pickle.dump(out, f))
    n_params = sum(v.size for v in state.values())
    print(f"wrote {args.output}: {len(state)} tensors, {n_params / 1e6:.2f}M values "
          f"(e.g. {_list(sorted(state), 3)})")
    print(hint)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as e:  # bad checkpoint, width or path: one line
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
