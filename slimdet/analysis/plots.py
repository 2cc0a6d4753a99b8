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
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from ..config.config import ConfigError
from ..config.widths import normalized_width
from ..utils.results import width_key

Series = Dict[str, List[Tuple[int, float]]]
_WIDTH = re.compile(r"^(?P<metric>.+)/w(?P<width>[0-9.]+)$")


def _read_text(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path}: not a text file (a checkpoint?); give a JSON file "
                          "of results or a run's metrics.json") from None
    except IsADirectoryError:
        raise ConfigError(f"{flag} {path} is a folder") from None
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot read it: {e.strerror or e}") from None


def read_metrics(path: str, flag: str = "metrics file") -> Tuple[Series, List[int]]:
    """``key -> [(iteration, value), ...]`` sorted by iteration, and the numbers of the lines
    that are not JSON (a run killed mid-write leaves a partial last line; the caller says so:
    a skipped line is never silent). A key repeated at one iteration keeps its last value (a
    resumed run rewrites iterations). ``path``: a metrics.json or the run folder holding it."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics file at {path}")
    values: Dict[str, Dict[int, float]] = defaultdict(dict)
    skipped: List[int] = []
    lines = [(n, line) for n, line in enumerate(_read_text(path, flag).splitlines(), 1)
             if line.strip()]
    rows = 0
    for number, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped.append(number)
            continue
        if not isinstance(row, dict) or "iteration" not in row:
            continue
        rows += 1
        it = int(row["iteration"])
        for k, v in row.items():
            if k != "iteration" and isinstance(v, (int, float)) and math.isfinite(v):
                values[k][it] = float(v)
    if not rows and (len(lines) > 1 or len(skipped) < len(lines)):
        # Another file (an eval_results.json, a config): read as a metrics file it drew
        # nothing, exit 0, after a warning about lines "a killed run" left. A lone partial
        # line is what a run killed during its first write leaves.
        raise ConfigError(f"{flag} {path}: not a run's metrics.json (none of its {len(lines)} "
                          "line(s) is a JSON record with an 'iteration'); give a run's "
                          "OUTPUT_DIR or its metrics.json")
    return {k: sorted(v.items()) for k, v in values.items()}, skipped


def load_metrics(path: str) -> Series:
    """:func:`read_metrics` without the skipped lines."""
    return read_metrics(path)[0]


def skipped_lines_note(path: str, skipped: Sequence[int]) -> str:
    """One line naming the lines of ``path`` that were not read ("" when none)."""
    if not skipped:
        return ""
    shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
    return (f"warning: skipped {len(skipped)} line(s) of {path} that are not JSON (line "
            f"{shown}; a run killed mid-write leaves a partial last line)")


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
    save_figure(fig, path, dpi=100, tool=_RUN_TOOL)
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


# PNG text key naming the tool that drew a figure: a tool replaces (or removes as stale) its own
# figures in its output folder, never a file someone else put there under the same name.
_OWNER_KEY = "slimdet-tool"
_RUN_TOOL = "plot_metrics"
# The formats the tools draw to (matplotlib's Agg canvas): an --plot of another extension, or of
# none (matplotlib would silently add .png), is refused before any work.
FIGURE_EXTENSIONS = tuple(f".{e}" for e in ("png", "pdf", "svg", "jpg", "jpeg", "webp", "tif",
                                           "tiff", "eps", "ps"))


def save_figure(fig, path: str, dpi: int, tool: str = "") -> str:
    """``fig`` to ``path`` (closed after); a PNG drawn by ``tool`` is marked as its own."""
    metadata = {_OWNER_KEY: tool} if tool and path.lower().endswith(".png") else None
    try:
        fig.savefig(path, dpi=dpi, metadata=metadata)
    finally:
        plt.close(fig)
    return path


def drawn_by(path: str, tool: str) -> bool:
    """Whether ``path`` is a PNG that ``tool`` drew (:func:`save_figure`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.info.get(_OWNER_KEY) == tool
    except (OSError, UnidentifiedImageError):
        return False


def check_own_outputs(paths: Sequence[str], flag: str, tool: str, overwrite: bool,
                      owned: Optional[Callable[[str], bool]] = None) -> None:
    """Before drawing: an existing file at one of ``paths`` that ``tool`` did not write
    (``owned(path)``, default :func:`drawn_by`) is replaced only with ``overwrite`` (one line
    naming it otherwise)."""
    owned = owned or (lambda p: drawn_by(p, tool))
    for p in paths:
        if os.path.isdir(p):
            raise ConfigError(f"{flag}: {p} is a folder where {tool} writes a file")
        if os.path.lexists(p) and not overwrite and not owned(p):
            raise ConfigError(f"{flag}: {p} exists and was not written by {tool}: pass --overwrite "
                              "to replace it, or choose another folder")


RUN_FIGURES = (("losses", plot_losses), ("lr", plot_lr), ("accuracy", plot_accuracy),
               ("gradients", plot_gradients))


@dataclass
class RunPlots:
    """What :func:`plot_run` did: figures ``written``, its own earlier figures ``removed``
    (their metrics are no longer in the file), ``skipped`` line numbers of the metrics file."""
    metrics: str
    written: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    skipped: List[int] = field(default_factory=list)


def run_plots_folder(metrics_path: str, out_dir: Optional[str] = None) -> str:
    base = metrics_path if os.path.isdir(metrics_path) else os.path.dirname(metrics_path)
    return out_dir or os.path.join(base, "plots")


def plot_run(metrics_path: str, out_dir: Optional[str] = None, overwrite: bool = False) -> RunPlots:
    """All figures a run's metrics allow, in ``out_dir`` (default ``RUN/plots``). A figure of
    :data:`RUN_FIGURES` it drew earlier whose metrics are gone is removed, so the folder never
    shows a stale one beside the new ones; a file there it did not draw is replaced only with
    ``overwrite``, and never removed."""
    series, skipped = read_metrics(metrics_path)
    out_dir = run_plots_folder(metrics_path, out_dir)
    paths = {name: os.path.join(out_dir, f"{name}.png") for name, _ in RUN_FIGURES}
    check_own_outputs(list(paths.values()), "--out", _RUN_TOOL, overwrite)
    os.makedirs(out_dir, exist_ok=True)
    done = RunPlots(metrics_path if not os.path.isdir(metrics_path)
                    else os.path.join(metrics_path, "metrics.json"), skipped=skipped)
    for name, fn in RUN_FIGURES:
        p = fn(series, paths[name])
        if p:
            done.written.append(p)
        elif os.path.isfile(paths[name]) and drawn_by(paths[name], _RUN_TOOL):
            os.remove(paths[name])
            done.removed.append(paths[name])
    return done


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


def _numbers(data: Dict) -> Dict[str, float]:
    return {k: float(v) for k, v in data.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _results_of(data: Any, path: str, flag: str) -> Dict[str, float]:
    """The flat results in one JSON document of any of the forms :func:`load_results` reads."""
    if isinstance(data, dict) and isinstance(data.get("rows"), list) and "metric" in data:
        curve = widths_results(data, path, flag)  # tools/eval_widths.py output
        return {width_key(m, r["width"]): float(v) for r in curve["rows"]
                for m, v in r.items() if m not in ("width", "macs", "params")
                and isinstance(v, (int, float))}
    if isinstance(data, dict) and isinstance(data.get("results"), dict):
        return _numbers(data["results"])  # eval_results.json / a line of eval_history.jsonl
    if isinstance(data, dict):
        return _numbers(data)
    raise ConfigError(f"{flag} {path}: a JSON {type(data).__name__}, not the results of an "
                      "evaluation (a dict such as {\"top1/w1\": 70.1})")


def load_results(path: str, flag: str = "--results") -> Dict[str, float]:
    """Flat ``{"metric/w{w}": value}`` from any file slimdet writes results to: a JSON dict of
    them, an ``eval_results.json`` (``{"weights", "results": {...}}``), a
    ``tools/eval_widths.py`` output (``rows``), the last record of an ``eval_history.jsonl``, or
    the last value of every key of a ``metrics.json`` (also given as its run folder). A file
    that is none of these is a :class:`ConfigError` naming it (a truncated JSON file: "not
    valid JSON")."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "metrics.json")):
            raise ConfigError(f"{flag} {path} is a folder without a metrics.json")
        path = os.path.join(path, "metrics.json")
    text = _read_text(path, flag)
    try:
        return _results_of(json.loads(text), path, flag)
    except json.JSONDecodeError as e:
        whole_error = e
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    if not records or not all(isinstance(r, dict) for r in records):
        raise ConfigError(f"{flag} {path}: not valid JSON ({whole_error.msg}: line "
                          f"{whole_error.lineno} column {whole_error.colno})")
    if all("results" in r for r in records):  # eval_history.jsonl: the latest evaluation
        return _results_of(records[-1], path, flag)
    series, _ = read_metrics(path, flag)  # metrics.json: the last value of every key
    return {k: pts[-1][1] for k, pts in series.items()}


def check_results_network(path: str, profile: Sequence[Dict[str, Any]], network: str,
                          flag: str = "--results", tolerance: float = 0.01) -> None:
    """A ``tools/eval_widths.py`` output records the MACs of the network it evaluated at each
    width; drawn at the costs of ``profile`` (the rows of :func:`profile_widths` for the network
    named ``network``), its accuracies are another network's when those differ by more than
    ``tolerance`` (relative; a classifier head of another size stays inside it). That is a
    :class:`ConfigError`; the other forms of results record no costs and are not checked."""
    if os.path.isdir(path):
        return
    try:
        data = json.loads(_read_text(path, flag))
    except json.JSONDecodeError:
        return
    if not (isinstance(data, dict) and isinstance(data.get("rows"), list) and "metric" in data):
        return
    recorded = {normalized_width(float(r["width"])): float(r["macs"])
                for r in widths_results(data, path, flag)["rows"]}
    for row in profile:
        macs = recorded.get(normalized_width(row["width"]))
        if macs is not None and abs(macs - row["macs"]) > tolerance * row["macs"]:
            made_with = f" (made with {data['config']})" if data.get("config") else ""
            raise ConfigError(
                f"{flag} {path}{made_with} holds another network's accuracies: width "
                f"{row['width']:g} had {macs / 1e6:.2f} M MACs there, {row['macs'] / 1e6:.2f} M "
                f"in {network}; give the config the results were made with")


def widths_results(data: Any, path: str, flag: str = "--compare") -> Dict[str, Any]:
    """``data`` if it has the shape of a ``tools/eval_widths.py`` output (a label, a metric,
    rows of width / macs / that metric, the trained widths); a :class:`ConfigError` naming
    ``flag`` and ``path`` and what is missing otherwise."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{flag} {path}: not an output of tools/eval_widths.py ({what})")

    if not isinstance(data, dict):
        raise bad(f"a JSON {type(data).__name__}, not a dict")
    for key, kind in (("label", str), ("metric", str), ("rows", list), ("trained_widths", list)):
        if not isinstance(data.get(key), kind):
            raise bad(f"no {kind.__name__} {key!r}")
    metric = data["metric"]
    if not data["rows"]:
        raise bad("no rows")
    for i, row in enumerate(data["rows"]):
        missing = [k for k in ("width", "macs", metric)
                   if not (isinstance(row, dict) and isinstance(row.get(k), (int, float)))]
        if missing:
            raise bad(f"row {i} has no number {missing[0]!r}")
    return data


def read_widths_results(path: str, flag: str = "--compare") -> Dict[str, Any]:
    """:func:`widths_results` of the JSON file ``path``."""
    text = _read_text(path, flag)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag} {path}: not valid JSON ({e.msg}: line {e.lineno})") from None
    return widths_results(data, path, flag)


def common_metric(curves: Sequence[Dict], names: Sequence[str]) -> str:
    """The one metric of ``curves`` (named ``names``, for the message): curves of different
    metrics on one axis would be read as one quantity."""
    metrics = dict.fromkeys(c["metric"] for c in curves)
    if len(metrics) > 1:
        raise ConfigError("curves of different metrics cannot share one plot: " + ", ".join(
            f"{n} ({c['metric']})" for n, c in zip(names, curves)) + "; plot them separately")
    return next(iter(metrics), "")


def result_widths(results: Dict[str, float], metric: str) -> List[float]:
    """The widths ``results`` hold ``metric`` for, widest first."""
    widths = {normalized_width(float(m.group("width"))) for m in map(_WIDTH.match, results)
              if m and m.group("metric") == metric}
    return sorted(widths, reverse=True)


def pick_accuracy_metric(results: Dict[str, float], metric: Optional[str] = None) -> str:
    """``metric`` if given, else the first per-width top-1 metric found (probe before kNN)."""
    names = {(_WIDTH.match(k).group("metric")) for k in results if _WIDTH.match(k)}
    if metric:
        if metric not in names:
            raise ConfigError(f"--metric {metric}: not in the results; their per-width "
                              f"metrics: {sorted(names)}")
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
    return save_figure(fig, path, dpi=100)


def plot_accuracy_vs_macs(curves: Sequence[Dict], path: str, title: str = "") -> str:
    """Accuracy against MACs of many widths of one or more networks (``tools/eval_widths.py``).

    Each curve: ``{"label", "metric", "trained_widths", "rows": [{"width", "macs", <metric>}]}``.
    Widths the network trained at are filled markers, the others (BN statistics calibrated
    after training) open ones; every point is labelled with its width.
    """
    metric = common_metric(curves, [c["label"] for c in curves])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, curve in enumerate(curves):
        color = f"C{i}"
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
    ax.set_ylabel(f"{metric} (%)" if metric else "")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
