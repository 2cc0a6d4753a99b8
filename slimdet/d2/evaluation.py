"""Evaluation of every width with Detectron2's ``COCOEvaluator`` (docs/method.md §6: once per width)."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Dict, Iterable, Mapping, Optional, Sequence

from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset, print_csv_format
from detectron2.utils import comm
from torch import nn

from ..layers import get_width, set_width
from ..utils.results import per_width_table, width_key
from .datasets import ImageCheckingMapper, output_folder_name

logger = logging.getLogger(__name__)

TABLE_METRICS = ("AP", "AP50", "AP75")


def build_coco_evaluator(cfg, dataset_name: str, width: float) -> COCOEvaluator:
    """``COCOEvaluator`` writing to ``OUTPUT_DIR/inference/<dataset>/w<w>``.

    ``use_fast_impl=False``: the pure-Python Detectron2 here has no C++ COCO evaluation.
    """
    out = os.path.join(cfg.OUTPUT_DIR, "inference", output_folder_name(dataset_name),
                       f"w{float(width):g}")
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    return COCOEvaluator(dataset_name, tasks=tasks, distributed=True, output_dir=out,
                         use_fast_impl=False)


def evaluate_widths(cfg, model: nn.Module, widths: Sequence[float],
                    dataset_names: Optional[Iterable[str]] = None) -> Dict[str, Dict]:
    """Run the test set(s) once per width.

    Returns ``{dataset: {"bbox": {"AP/w1": ..., "AP/w0.5": ...}, "segm": {...}}}``: COCO's
    metrics keyed by slimdet's per-width scheme (``slimdet.utils.results.width_key``), so that
    Detectron2's EvalHook flattens them to ``bbox/AP/w0.5``. The model's width is restored.
    """
    dataset_names = list(dataset_names if dataset_names is not None else cfg.DATASETS.TEST)
    previous = get_width(model)
    results: Dict[str, Dict] = OrderedDict()
    try:
        for name in dataset_names:
            loader = build_detection_test_loader(cfg, name,
                                                 mapper=ImageCheckingMapper(cfg, False))
            per_task: Dict[str, Dict[str, float]] = OrderedDict()
            for w in widths:
                set_width(model, w)
                logger.info("Evaluating %s at width %g", name, w)
                res = inference_on_dataset(model, loader, build_coco_evaluator(cfg, name, w))
                if comm.is_main_process():
                    print_csv_format(res)
                for task, metrics in (res or {}).items():
                    for metric, value in metrics.items():
                        per_task.setdefault(task, OrderedDict())[width_key(metric, w)] = value
            results[name] = per_task
    finally:
        set_width(model, previous)
    return results


def format_width_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Box and mask AP / AP50 / AP75 of every width of every dataset, one table per dataset."""
    tables = []
    for name, per_task in results.items():
        flat = {f"{task}/{key}": v for task, metrics in per_task.items()
                for key, v in metrics.items()}
        columns = [f"{task}/{m}" for task in ("bbox", "segm") if task in per_task
                   for m in TABLE_METRICS]
        labels = {c: c.replace("bbox/", "box ").replace("segm/", "mask ") for c in columns}
        tables.append(f"{name}:\n" + per_width_table(flat, columns, labels))
    return "\n".join(tables)
