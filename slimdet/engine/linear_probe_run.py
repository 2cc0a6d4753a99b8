"""Train and evaluate the switchable linear probe on a pre-trained checkpoint in one call.

The README demo pre-trains, then calls :func:`run_linear_probe` to put the linear top-1 of every
width next to the kNN top-1; tests use it to compare pre-trained and random-init backbones.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

from iopath.common.file_io import g_pathmgr

from .defaults import seed_all
from .trainer import SlimTrainer

logger = logging.getLogger("slimdet")


def run_linear_probe(probe_cfg, weights_path: Optional[str],
                     output_dir: Optional[str] = None, resume: bool = False) -> Dict[str, float]:
    """Train ``probe_cfg``'s LinearProbe on the backbone of ``weights_path`` and evaluate it.

    ``weights_path``: a slimdet pre-training checkpoint, a reference-implementation file, or
    ``None``/"" for a randomly initialised backbone (the baseline the pre-training must beat).
    ``resume``: continue the probe run in ``output_dir`` from its last checkpoint (a finished
    one is only evaluated). Returns ``linear_top1/w{w}`` and ``linear_top5/w{w}`` for every
    width (percent).
    """
    cfg = probe_cfg.clone()
    cfg.defrost()
    cfg.MODEL.METHOD = "LinearProbe"
    cfg.MODEL.WEIGHTS = weights_path or ""
    if "ClassificationEvaluator" not in cfg.TEST.EVALUATORS:
        cfg.TEST.EVALUATORS = list(cfg.TEST.EVALUATORS) + ["ClassificationEvaluator"]
    if output_dir is not None:
        cfg.OUTPUT_DIR = output_dir
    cfg.freeze()
    g_pathmgr.mkdirs(cfg.OUTPUT_DIR)
    # The classifiers' (and a random-init backbone's) initial weights come from SEED, as in
    # tools/train_net.py, not from whatever ran before in this process (the demo's
    # pre-training and its other probe): the same numbers however the call is reached.
    seed_all(cfg.SEED)
    trainer = SlimTrainer(cfg)
    if resume and trainer.run_finished():  # a finished probe is only evaluated
        trainer.load_for_evaluation(resume=True)
        results = SlimTrainer.test(cfg, trainer.method)
    else:
        # MODEL.WEIGHTS: the whole frozen backbone, or an error; or the probe's last checkpoint
        trainer.resume_or_load(resume=resume)
        results = trainer.train() or SlimTrainer.test(cfg, trainer.method)
    out = {}
    for key, value in results.items():
        if key.startswith(("top1/", "top5/")):
            out["linear_" + key] = value
    return out
