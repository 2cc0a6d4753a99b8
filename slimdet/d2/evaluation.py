"""Evaluation of every width with Detectron2's ``COCOEvaluator`` (docs/method.md §6: once per width)."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset, print_csv_format
from detectron2.utils import comm
from tabulate import tabulate
from torch import nn

from ..layers import get_width, set_width

logger = logging.getLogger(__name__)

TABLE_METRICS = ("AP", "AP50", "AP75")


def width_key(width: float) -> str:
    """Result key of one width, e.g. ``width_0.25`` (flat-dict friendly for EvalHook / JSON)."""
    return f"width_{float(width):g}"


def build_coco_evaluator(cfg, dataset_name: str, width: float) -> COCOEvaluator:
    """``COCOEvaluator`` writing to ``OUTPUT_DIR/inference/<dataset>/width_<w>``.

    ``use_fast_impl=False``: the pure-Python Detectron2 here has no C++ COCO evaluation.
    """
    out = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name, width_key(width))
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    return COCOEvaluator(dataset_name, tasks=tasks, distributed=True, output_dir=out,
                         use_fast_impl=False)


def evaluate_widths(cfg, model: nn.Module, widths: Sequence[float],
                    dataset_names: Optional[Iterable[str]] = None) -> Dict[str, Dict]:
    """Run the test set(s) once per width.

    Returns ``{dataset: {width_key: {"bbox": {...}, "segm": {...}}}}`` (``width_key`` as in
    :func:`width_key`); the model's width is restored afterwards.
    """
    dataset_names = list(dataset_names if dataset_names is not None else cfg.DATASETS.TEST)
    previous = get_width(model)
    results: Dict[str, Dict] = OrderedDict()
    try:
        for name in dataset_names:
            loader = build_detection_test_loader(cfg, name)
            per_width: Dict[str, Dict] = OrderedDict()
            for w in widths:
                set_width(model, w)
                logger.info("Evaluating %s at width %g", name, w)
                res = inference_on_dataset(model, loader, build_coco_evaluator(cfg, name, w))
                if comm.is_main_process():
                    print_csv_format(res)
                per_width[width_key(w)] = res
            results[name] = per_width
    finally:
        set_width(model, previous)
    return results


def width_table_rows(per_width: Mapping[str, Mapping]) -> List[List]:
    """One row per width: width, then box AP/AP50/AP75 and mask AP/AP50/AP75 (NaN if absent)."""
    rows = []
    for key, res in per_width.items():
        row: List = [float(key.split("_", 1)[1])]
        for task in ("bbox", "segm"):
            metrics = res.get(task, {}) if res else {}
            row += [metrics.get(m, float("nan")) for m in TABLE_METRICS]
        rows.append(row)
    return rows


def format_width_table(results: Mapping[str, Mapping[str, Mapping]]) -> str:
    """All datasets' per-width results as one plain-text table (box AP and mask AP per width)."""
    headers = ["dataset", "width"] + [f"box {m}" for m in TABLE_METRICS] + \
        [f"mask {m}" for m in TABLE_METRICS]
    rows = [[name] + row for name, per_width in results.items()
            for row in width_table_rows(per_width)]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f")
