"""One naming scheme for per-width results, and one table of them.

Every per-width number slimdet reports (kNN and linear top-1, MACs, gradient norms, COCO AP) is
keyed ``<metric>/w<width>`` (``knn_top1/w0.5``, ``bbox/AP/w0.25``): flat, so Detectron2's
event storage, ``metrics.json`` and EvalHook take it as is, and a width is read back with
:func:`split_width_key`.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

from tabulate import tabulate


def width_key(metric: str, width: float) -> str:
    """``width_key("knn_top1", 0.5)`` -> ``"knn_top1/w0.5"``."""
    return f"{metric}/w{float(width):g}"


def split_width_key(key: str) -> Tuple[str, Optional[float]]:
    """``"top1/w0.5"`` -> ``("top1", 0.5)``; a key without a width -> ``(key, None)``."""
    metric, sep, width = key.rpartition("/w")
    try:
        return (metric, float(width)) if sep and metric else (key, None)
    except ValueError:
        return key, None


def per_width_table(results: Mapping[str, float], metrics: Optional[Sequence[str]] = None,
                    labels: Optional[Mapping[str, str]] = None, floatfmt: str = ".2f") -> str:
    """One row per width (widest first), one column per metric (``metrics``, default: every
    metric in ``results``, sorted; ``labels`` renames columns). Keys without a width go to a
    row ``-``; a metric a width lacks is left blank."""
    rows: Dict[Optional[float], Dict[str, float]] = {}
    for key, value in results.items():
        metric, width = split_width_key(key)
        rows.setdefault(width, {})[metric] = value
    if metrics is None:
        metrics = sorted({m for r in rows.values() for m in r})
    labels = labels or {}
    order = sorted(rows, key=lambda w: -w if w is not None else 1.0)
    table = [["-" if w is None else f"{w:g}"] +
             [format(rows[w][m], floatfmt) if m in rows[w] else "" for m in metrics]
             for w in order]
    return tabulate(table, headers=["width"] + [labels.get(m, m) for m in metrics],
                    tablefmt="pipe", disable_numparse=True)
