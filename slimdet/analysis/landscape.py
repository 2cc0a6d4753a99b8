"""Loss landscape around the final weights with the training trajectory (Li et al., 2018).

Choices (and why):

- **Directions**: PCA of the trajectory ``theta_i - theta_final`` (the two directions that
  explain most of how training moved), then filter-normalised: each output filter/row of a
  direction gets the norm of the same filter of the final weights, so a unit step changes every
  filter by its own scale (BN makes the loss blind to a filter's scale; raw directions would
  mostly probe the largest filters). Only weights with >= 2 dimensions (conv / linear) move;
  biases and BN affine parameters stay at their final values, as in Li et al.
- **One set of directions for all widths**: widths share the weights, so a grid point is one
  weight vector; width ``w`` sees its leading slice of it. The trajectory is projected once
  (least squares on the two, not necessarily orthogonal, directions).
- **BN**: training-mode batch statistics on fixed batches (running statistics are restored after
  each evaluation). Every grid point is then scored exactly as the optimizer saw the loss, and
  no running statistic measured at other weights distorts it.
- **Loss**: the method's task loss (contrastive / CE, no distillation, no loss weight) averaged
  over a few fixed batches; the method's targets (e.g. MoCo keys and queue) are computed once at
  the final weights and kept fixed, so the landscape is that of the query encoder.
- The grid is odd and symmetric, so its centre is exactly the final weights.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..checkpoint import ALL_PARTS, check_keys, load_weights, read_file
from ..config import ConfigError
from ..layers import set_width
from ..modeling.methods import backbone_of
from ..utils.file_io import atomic_write
from .gradients import preserved_state

StateDict = Dict[str, torch.Tensor]


def load_trajectory(path: str, model: Optional[nn.Module] = None,
                    purpose: str = "the loss landscape") -> List[Tuple[int, StateDict]]:
    """``[(iteration, model state), ...]`` sorted by iteration, from a folder of weight files:
    ``trajectory/iter_*.pth`` (TrajectoryHook) or periodic checkpoints ``model_*.pth``. Files of
    the same iteration (``model_final`` and the last periodic one) are kept once.

    With ``model``, the last file is loaded into it as every tool loads weights
    (:func:`load_weights`: every part, one-line :class:`CheckpointError` for another method or
    architecture, e.g. a probe's run under a pre-training config) and every other file must
    have exactly the model's keys and shapes too: the trajectory's PCA runs on the model's
    weights."""
    # A run folder's trajectory/ first; an empty one (a run stopped before TrajectoryHook's
    # first save) leaves the folder's own periodic checkpoints to use, not an error.
    files = (sorted(glob.glob(os.path.join(path, "trajectory", "iter_*.pth")))
             or sorted(glob.glob(os.path.join(path, "iter_*.pth")))
             or sorted(glob.glob(os.path.join(path, "model_*.pth"))))
    if not files:
        raise FileNotFoundError(f"no weight files in {path}: neither trajectory/iter_*.pth "
                                "(ANALYSIS.TRAJECTORY_PERIOD) nor model_*.pth (periodic "
                                "checkpoints) nor iter_*.pth")
    by_iter: Dict[int, Tuple[str, StateDict]] = {}
    for n, f in enumerate(files):
        data = read_file(f)  # without running code, like every checkpoint slimdet reads
        state = data.get("model", data) if isinstance(data, dict) else data
        it = data.get("iteration") if isinstance(data, dict) else None
        if it is None:
            m = re.search(r"(\d+)", os.path.basename(f))
            it = int(m.group(1)) if m else 10 ** 9 + n  # model_final without an iteration: last
        by_iter[int(it)] = (f, state)
    trajectory = sorted(by_iter.items())
    if model is not None:
        load_weights(model, trajectory[-1][1][0], ALL_PARTS, purpose)
        own = model.state_dict()
        for _, (f, state) in trajectory[:-1]:
            check_keys(own, state, repr(f), purpose)
    return [(it, state) for it, (_, state) in trajectory]


def moving_parameters(model: nn.Module) -> List[str]:
    """Names of the weights the landscape moves: trainable, at least 2-d (conv / linear)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]


def _flat(state: StateDict, names: Sequence[str]) -> torch.Tensor:
    return torch.cat([state[n].detach().float().reshape(-1) for n in names])


def _unflat(vec: torch.Tensor, like: StateDict, names: Sequence[str]) -> StateDict:
    out, i = {}, 0
    for n in names:
        k = like[n].numel()
        out[n] = vec[i:i + k].view_as(like[n]).clone()
        i += k
    return out


def pca_directions(states: Sequence[StateDict], names: Sequence[str]) -> Tuple[StateDict, StateDict, np.ndarray]:
    """The two principal directions of ``states[i] - states[-1]`` (centred PCA) and the
    fraction of the variance each explains."""
    if len(states) < 4:  # before stacking: one file would leave nothing to stack
        raise ConfigError(f"PCA of a trajectory needs at least 4 weight files (got {len(states)}); "
                          "save more with ANALYSIS.TRAJECTORY_PERIOD or a smaller CHECKPOINT_PERIOD")
    final = _flat(states[-1], names)
    rows = torch.stack([_flat(s, names) - final for s in states[:-1]])
    rows = rows - rows.mean(0, keepdim=True)
    gram = (rows @ rows.T).double()
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    dirs = []
    for k in range(2):
        v = rows.T @ evecs[:, k].float()
        dirs.append(v / v.norm().clamp_min(1e-12))
    ratio = (evals[:2] / evals.sum().clamp_min(1e-30)).numpy()
    return _unflat(dirs[0], states[-1], names), _unflat(dirs[1], states[-1], names), ratio


def filter_normalize(direction: StateDict, weights: StateDict) -> StateDict:
    """Scale each output filter (first-dimension row) of ``direction`` to the norm of the same
    filter of ``weights``."""
    out = {}
    for n, d in direction.items():
        w = weights[n].float()
        d_rows, w_rows = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
        scale = w_rows.norm(dim=1, keepdim=True) / d_rows.norm(dim=1, keepdim=True).clamp_min(1e-10)
        out[n] = (d_rows * scale).view_as(d)
    return out


def project(states: Sequence[StateDict], final: StateDict, d1: StateDict, d2: StateDict,
            names: Sequence[str]) -> np.ndarray:
    """Coordinates ``(a, b)`` minimising ``|theta_i - theta_final - a d1 - b d2|`` per state."""
    f, u, v = _flat(final, names).double(), _flat(d1, names).double(), _flat(d2, names).double()
    gram = torch.tensor([[u @ u, u @ v], [u @ v, v @ v]], dtype=torch.float64)
    coords = []
    for s in states:
        delta = _flat(s, names).double() - f
        coords.append(torch.linalg.solve(gram, torch.stack([u @ delta, v @ delta])).numpy())
    return np.array(coords)


def symmetric_axis(extent: float, n: int) -> np.ndarray:
    """``n`` (odd) points on [-extent, extent] with an exact 0 in the middle."""
    if n < 3 or n % 2 == 0:
        raise ConfigError(f"the grid size must be odd and >= 3 (got {n}) so its centre is the final weights")
    xs = np.linspace(-extent, extent, n)
    xs[n // 2] = 0.0
    return xs


@dataclass
class TaskLossEvaluator:
    """The task loss of each of ``widths`` on fixed batches, BN in training mode, state restored.

    The method's full width (the widest of its network) always runs first on each batch, as in
    the width loop, and is the one ``task_loss`` is told is full: a method whose narrower widths
    read the full width's outputs (SimCLR's keys) compares them with that, so a width's loss
    never depends on which other widths were asked for. It is returned only when asked for."""
    method: nn.Module
    batches: List[Any]
    widths: Sequence[float]
    ctxs: List[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.full_width = max(backbone_of(self.method).widths)
        # Widest first after the full width: the order the width loop trains them in.
        self.order = [self.full_width] + sorted((float(w) for w in self.widths
                                                 if float(w) != self.full_width), reverse=True)
        # Targets at the current (final) weights, computed once; prepare's side effects undone.
        self.method.train()
        with torch.no_grad(), preserved_state(self.method):
            self.ctxs = [self.method.prepare(b) for b in self.batches]

    @torch.no_grad()
    def __call__(self) -> Dict[float, float]:
        out = {}
        wanted = {float(w) for w in self.widths}
        with preserved_state(self.method):
            for w in self.order:
                set_width(self.method, w)
                losses = [float(self.method.task_loss(self.method(b), c,
                                                      is_full=(w == self.full_width)).loss)
                          for b, c in zip(self.batches, self.ctxs)]
                if w in wanted:
                    out[float(w)] = float(np.mean(losses))
        set_width(self.method, self.full_width)
        return out


@dataclass
class Landscape:
    xs: np.ndarray
    ys: np.ndarray
    widths: List[float]
    loss: np.ndarray            # [width, y, x]
    trajectory: np.ndarray      # [step, 2]
    iterations: List[int]
    explained: np.ndarray       # variance ratio of the two PCA directions
    final_loss: Dict[float, float]  # loss at the final weights, loaded directly

    def save(self, path: str) -> str:
        """All arrays to ``path`` (atomically), with a ``written_by`` marker: the tool replaces
        a file of its own there, not one someone else saved under the name."""
        atomic_write(path, lambda f: np.savez(
            f, xs=self.xs, ys=self.ys, widths=np.array(self.widths), loss=self.loss,
            trajectory=self.trajectory, iterations=np.array(self.iterations),
            explained=self.explained,
            final_loss=np.array([self.final_loss[w] for w in self.widths]),
            written_by=np.array(LANDSCAPE_TOOL)))
        return path


LANDSCAPE_TOOL = "plot_landscape"


def saved_by_landscape(path: str) -> bool:
    """Whether ``path`` is a file this module wrote: a ``landscape.npz`` with its marker, or a
    figure :func:`plot_landscape` drew."""
    from .plots import drawn_by

    if not path.endswith(".npz"):
        return drawn_by(path, LANDSCAPE_TOOL)
    try:
        with np.load(path, allow_pickle=False) as data:
            return "written_by" in data.files and str(data["written_by"]) == LANDSCAPE_TOOL
    except (OSError, ValueError):  # not an npz (or not readable): not ours
        return False


def compute_landscape(method: nn.Module, trajectory: Sequence[Tuple[int, StateDict]],
                      evaluate: Callable[[], Dict[float, float]], grid: int = 11,
                      span: Optional[float] = None, margin: float = 1.3,
                      progress: Optional[Callable[[int, int], None]] = None) -> Landscape:
    """Loss of every width on a ``grid`` x ``grid`` plane through the final weights.

    ``method`` must already hold the final weights (``trajectory[-1]``); ``evaluate()`` returns
    ``{width: loss}`` at the method's current weights. The plane spans ``margin`` times the
    projected trajectory on each axis, or ``+-span`` when given. The method ends at the final
    weights.
    """
    names = moving_parameters(method)
    states = [s for _, s in trajectory]
    final = {n: states[-1][n].float() for n in names}
    d1, d2, explained = pca_directions(states, names)
    d1, d2 = filter_normalize(d1, final), filter_normalize(d2, final)
    coords = project(states, final, d1, d2, names)
    final_loss = evaluate()
    widths = sorted(final_loss, reverse=True)
    if span is not None:
        ex = ey = float(span)
    else:
        ex = max(float(np.abs(coords[:, 0]).max()) * margin, 1e-3)
        ey = max(float(np.abs(coords[:, 1]).max()) * margin, 1e-3)
    xs, ys = symmetric_axis(ex, grid), symmetric_axis(ey, grid)
    params = dict(method.named_parameters())
    loss = np.zeros((len(widths), grid, grid))
    done = 0
    try:
        for iy, b in enumerate(ys):
            for ix, a in enumerate(xs):
                with torch.no_grad():
                    for n in names:
                        p = params[n]
                        p.copy_((final[n] + float(a) * d1[n] + float(b) * d2[n]).to(p.dtype))
                values = evaluate()
                for k, w in enumerate(widths):
                    loss[k, iy, ix] = values[w]
                done += 1
                if progress:
                    progress(done, grid * grid)
    finally:
        with torch.no_grad():
            for n in names:
                params[n].copy_(final[n].to(params[n].dtype))
    return Landscape(xs, ys, widths, loss, coords, [it for it, _ in trajectory], explained, final_loss)


def plot_landscape(ls: Landscape, width: float, path: str, title: str = "",
                   figsize: Tuple[float, float] = (6.0, 5.0), dpi: int = 100) -> str:
    """Contour plot of one width's loss with the projected trajectory; ``figsize * dpi`` pixels."""
    import matplotlib.pyplot as plt

    from .plots import save_figure  # selects the Agg backend

    k = ls.widths.index(width)
    z = ls.loss[k]
    fig, ax = plt.subplots(figsize=figsize)
    levels = np.linspace(z.min(), z.max(), 21) if z.max() > z.min() else 10
    cf = ax.contourf(ls.xs, ls.ys, z, levels=levels, cmap="viridis")
    cs = ax.contour(ls.xs, ls.ys, z, levels=levels if np.ndim(levels) == 0 else levels[::4],
                    colors="white", linewidths=0.6)
    ax.clabel(cs, fontsize=7, fmt="%.2f")
    fig.colorbar(cf, ax=ax, label="task loss")
    t = ls.trajectory
    ax.plot(t[:, 0], t[:, 1], "-o", color="red", markersize=3, lw=1.2, label="trajectory")
    ax.scatter([t[0, 0]], [t[0, 1]], marker="s", color="orange", zorder=4,
               label=f"start (iter {ls.iterations[0]})")
    ax.scatter([t[-1, 0]], [t[-1, 1]], marker="*", s=120, color="red", zorder=4,
               label=f"final (iter {ls.iterations[-1]}), loss {ls.final_loss[width]:.3f}")
    ax.set_xlabel(f"PCA direction 1 ({100 * ls.explained[0]:.1f}% of trajectory variance)")
    ax.set_ylabel(f"PCA direction 2 ({100 * ls.explained[1]:.1f}%)")
    ax.set_title(title or f"loss landscape, width {width:g}")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path, dpi, tool=LANDSCAPE_TOOL)
