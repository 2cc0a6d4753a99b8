"""Pictures of a run from its ``metrics.json`` (one JSON dict per line, Detectron2's JSONWriter).

Per-width keys end in ``/w{width:g}``; each figure draws one line per width, full width first, in
a fixed colour per width so the figures of one run can be read together.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from ..config.config import ConfigError
from ..config.widths import normalized_width
from ..utils.results import width_key

Series = Dict[str, List[Tuple[int, float]]]
_WIDTH = re.compile(r"^(?P<metric>.+)/w(?P<width>[0-9.]+)$")


def load_metrics(path: str) -> Series:
    """``key -> [(iteration, value), ...]`` sorted by iteration; a key repeated at one iteration
    keeps its last value (a resumed run rewrites iterations). Lines that are not JSON (a run
    killed mid-write) are skipped."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics file at {path}")
    values: Dict[str, Dict[int, float]] = defaultdict(dict)
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict) or "iteration" not in row:
                continue
            it = int(row["iteration"])
            for k, v in row.items():
                if k != "iteration" and isinstance(v, (int, float)) and math.isfinite(v):
                    values[k][it] = float(v)
    return {k: sorted(v.items()) for k, v in values.items()}


def per_width(series: Series, metric: str) -> Dict[float, List[Tuple[int, float]]]:
    """``{width: points}`` of ``metric/w{width}``, widest first."""
    out = {}
    for key, pts in series.items():
        m = _WIDTH.match(key)
        if m and m.group("metric") == metric:
            out[float(m.group("width"))] = pts
    return dict(sorted(out.items(), key=lambda kv: -kv[0]))


def width_color(width: float, widths: Sequence[float] = (1.0, 0.75, 0.5, 0.25)) -> str:
    """One colour per width, stable across figures."""
    palette = {1.0: "tab:blue", 0.75: "tab:orange", 0.5: "tab:green", 0.25: "tab:red"}
    if width in palette:
        return palette[width]
    return plt.cm.viridis(max(0.0, min(1.0, width)))


def _plot_widths(ax, series: Series, metric: str, style: str = "-", label_fmt: str = "width {w:g}",
                 marker: Optional[str] = None) -> int:
    n = 0
    for w, pts in per_width(series, metric).items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, style, color=width_color(w), marker=marker or ("o" if len(xs) < 15 else None),
                markersize=3, label=label_fmt.format(w=w))
        n += 1
    return n


def _finish(fig, ax_list, path: str) -> str:
    for ax in ax_list:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _metrics_like(series: Series, pattern: str) -> List[str]:
    names = {(_WIDTH.match(k).group("metric")) for k in series if _WIDTH.match(k)}
    return sorted(n for n in names if re.search(pattern, n))


def plot_losses(series: Series, path: str) -> Optional[str]:
    """Task (contrastive / CE) and distillation loss per width, and the summed loss."""
    if not per_width(series, "loss_task") and "total_loss" not in series:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    _plot_widths(axes[0], series, "loss_task")
    axes[0].set_title("task loss per width")
    if not _plot_widths(axes[1], series, "loss_distill"):
        axes[1].text(0.5, 0.5, "no distillation logged", ha="center", transform=axes[1].transAxes)
    axes[1].set_title("distillation loss per width (KL to full width)")
    if "total_loss" in series:
        xs, ys = zip(*series["total_loss"])
        axes[2].plot(xs, ys, color="k", label="total (weighted sum)")
    axes[2].set_title("total loss")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
    return _finish(fig, axes, path)


def plot_lr(series: Series, path: str) -> Optional[str]:
    keys = [k for k in ("lr", "momentum") if k in series]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, k in zip(axes[0], keys):
        xs, ys = zip(*series[k])
        ax.plot(xs, ys, label=k)
        ax.set_xlabel("iteration")
        ax.set_ylabel({"lr": "learning rate", "momentum": "key-encoder momentum"}[k])
        ax.set_title(k)
    return _finish(fig, list(axes[0]), path)


def plot_accuracy(series: Series, path: str) -> Optional[str]:
    """kNN / linear-probe / classification accuracy per width (every metric with top1/top5/acc)."""
    metrics = _metrics_like(series, r"(top1|top5|acc)")
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        _plot_widths(ax, series, m, marker="o")
        ax.set_title(m)
        ax.set_xlabel("iteration")
        ax.set_ylabel("accuracy (%)")
    return _finish(fig, list(axes[0]), path)


def plot_gradients(series: Series, path: str) -> Optional[str]:
    """``grad_norm/w*`` (log scale) and ``grad_cos/w*`` from the gradient diagnostics hook."""
    if not per_width(series, "grad_norm"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _plot_widths(axes[0], series, "grad_norm", marker="o")
    axes[0].set_yscale("log")
    axes[0].set_title("gradient norm on the shared weights\n(each width's own slice)")
    axes[0].set_ylabel("L2 norm (weighted loss term)")
    _plot_widths(axes[1], series, "grad_cos", marker="o", label_fmt="width {w:g} vs 1.0")
    axes[1].axhline(0.0, color="gray", lw=0.8)
    axes[1].set_ylim(-1.05, 1.05)
    axes[1].set_title("cos(full-width grad, sub-width grad)\non the sub-width's slice")
    axes[1].set_ylabel("cosine similarity")
    for ax in axes:
        ax.set_xlabel("iteration")
    return _finish(fig, axes, path)


def plot_run(metrics_path: str, out_dir: Optional[str] = None) -> List[str]:
    """All figures a run's metrics allow; returns the PNG paths written."""
    series = load_metrics(metrics_path)
    base = metrics_path if os.path.isdir(metrics_path) else os.path.dirname(metrics_path)
    out_dir = out_dir or os.path.join(base, "plots")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, fn in (("losses", plot_losses), ("lr", plot_lr), ("accuracy", plot_accuracy),
                     ("gradients", plot_gradients)):
        p = fn(series, os.path.join(out_dir, f"{name}.png"))
        if p:
            written.append(p)
    return written


# ------------------------------------------------------------------ accuracy vs FLOPs / params
# docs/method.md §7 (ImageNet linear top-1) with docs/method.md §2's sizes of ResNet-50 at 224 px; the ResNet-18/34
# sizes are torchvision's (11.69 M / 1.82 G, 21.80 M / 3.67 G MACs).
PAPER_REFERENCE: Dict[str, List[Tuple[float, float, float]]] = {
    # name: [(params M, MACs G, top-1), ...]; the FLOPs panel reads index 1, params index 0
    "supervised slimmable R-50 [1, .75, .5, .25]": [(25.56, 4.09, 76.0), (14.77, 2.32, 74.9),
                                                    (6.92, 1.05, 72.2), (1.99, 0.28, 64.4)],
    "MoCo v2 R-50 alone (200 / 800 ep)": [(25.56, 4.09, 67.5), (25.56, 4.09, 71.1)],
    "MoCo v3 R-50 alone (300 ep)": [(25.56, 4.09, 72.8)],
    "MoCo v2 R-18 / R-34 alone": [(11.69, 1.82, 52.5), (21.80, 3.67, 57.4)],
    "SEED R-18 / R-34": [(11.69, 1.82, 57.6), (21.80, 3.67, 58.5)],
    "DisCo R-18 / R-34": [(11.69, 1.82, 60.6), (21.80, 3.67, 62.5)],
    "BINGO R-18 / R-34": [(11.69, 1.82, 61.4), (21.80, 3.67, 63.5)],
}


def load_results(path: str) -> Dict[str, float]:
    """Flat ``{"metric/w{w}": value}`` from a JSON dict, or the last value of every key of a
    ``metrics.json`` (one dict per line)."""
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
    except json.JSONDecodeError:
        pass
    return {k: pts[-1][1] for k, pts in load_metrics(path).items()}


def pick_accuracy_metric(results: Dict[str, float], metric: Optional[str] = None) -> str:
    """``metric`` if given, else the first per-width top-1 metric found (probe before kNN)."""
    names = {(_WIDTH.match(k).group("metric")) for k in results if _WIDTH.match(k)}
    if metric:
        if metric not in names:
            raise ConfigError(f"metric {metric!r} not in the results; per-width metrics: {sorted(names)}")
        return metric
    for cand in sorted(names, key=lambda n: (("knn" in n), n)):
        if "top1" in cand or "acc" in cand:
            return cand
    raise ConfigError(f"no per-width accuracy (top1/acc) in the results; found {sorted(names)}")


def plot_accuracy_vs_cost(rows: Sequence[Dict[str, float]], results: Dict[str, float], path: str,
                          metric: Optional[str] = None, reference: bool = False,
                          title: str = "") -> str:
    """Accuracy of every width against its FLOPs (MACs) and parameters, widths labelled.

    ``rows`` come from :func:`slimdet.evaluation.profile_widths`. ``reference`` overlays docs/method.md §7
    (ImageNet, 224 px): a different data set and resolution, so only the shape is comparable;
    log-scaled x axes keep both on one chart.
    """
    metric = pick_accuracy_metric(results, metric)
    pts = [(r["width"], r["macs"] / 1e9, r["params"] / 1e6, results[width_key(metric, r["width"])])
           for r in rows if width_key(metric, r["width"]) in results]
    if not pts:
        raise ConfigError(f"no width of the model has {metric}/w... in the results")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, col, xlabel in ((axes[0], 1, "FLOPs (G multiply-adds)"), (axes[1], 2, "parameters (M)")):
        xs = [p[col] for p in pts]
        ys = [p[3] for p in pts]
        ax.plot(xs, ys, "-", color="k", lw=1, alpha=0.5)
        for p in pts:
            ax.scatter(p[col], p[3], color=width_color(p[0]), s=50, zorder=3, label=f"width {p[0]:g}")
            ax.annotate(f"{p[0]:g}x", (p[col], p[3]), textcoords="offset points", xytext=(5, 5),
                        fontsize=8)
        if reference:
            markers = "s^vDP*X"
            for (name, ref), mk in zip(PAPER_REFERENCE.items(), markers):
                ax.plot([r[1] if col == 1 else r[0] for r in ref], [r[2] for r in ref], mk + "--", lw=0.8,
                        markersize=5, alpha=0.7, label=f"paper: {name}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel + " (log scale)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{metric} vs {xlabel.split(' (')[0]}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_accuracy_vs_macs(curves: Sequence[Dict], path: str, title: str = "") -> str:
    """Accuracy against MACs of many widths of one or more networks (``tools/eval_widths.py``).

    Each curve: ``{"label", "metric", "trained_widths", "rows": [{"width", "macs", <metric>}]}``.
    Widths the network trained at are filled markers, the others (BN statistics calibrated
    after training) open ones; every point is labelled with its width.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, curve in enumerate(curves):
        color = f"C{i}"
        metric = curve["metric"]
        rows = sorted(curve["rows"], key=lambda r: r["macs"])
        xs = [r["macs"] / 1e6 for r in rows]
        ys = [r[metric] for r in rows]
        ax.plot(xs, ys, "-", color=color, lw=1.2, alpha=0.8, label=curve["label"])
        trained = {normalized_width(w) for w in curve["trained_widths"]}
        for r, x, y in zip(rows, xs, ys):
            is_trained = normalized_width(r["width"]) in trained
            ax.scatter(x, y, s=60 if is_trained else 36, zorder=3, edgecolors=color,
                       facecolors=color if is_trained else "white", linewidths=1.5)
            ax.annotate(f"{r['width']:g}", (x, y), textcoords="offset points",
                        xytext=(4, -12 if i % 2 else 5), fontsize=7, color=color)
    ax.scatter([], [], s=60, facecolors="grey", edgecolors="grey", label="trained width")
    ax.scatter([], [], s=36, facecolors="white", edgecolors="grey",
               label="untrained width (BN calibrated)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("MMACs per image (log scale)")
    ax.set_ylabel(f"{curves[0]['metric'].split('/')[0]} (%)" if curves else "")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
