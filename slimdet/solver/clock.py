"""Where a recipe's epochs fall among a run's iterations.

Every key counted in epochs (warm-up, slow start, LR steps, the base-LR swap at slow start,
MoCo v3's momentum schedule, evaluation periods) is converted to iterations by
:meth:`EpochClock.iteration` and by nothing else, so that ``SOLVER.MAX_ITER`` gives a shortened
(or stretched) run of the same recipe: epoch ``e`` of a recipe of ``EPOCHS`` epochs is reached at
the same fraction ``e / EPOCHS`` of any run.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError


@dataclass(frozen=True)
class EpochClock:
    """``iters_per_epoch`` batches make one pass over the data; the run has ``max_iter``
    iterations for a recipe of ``epochs`` epochs (``max_iter = epochs * iters_per_epoch`` unless
    ``SOLVER.MAX_ITER`` says otherwise)."""

    iters_per_epoch: int
    epochs: float
    max_iter: int

    @classmethod
    def from_config(cls, cfg, iters_per_epoch: int) -> "EpochClock":
        epochs, max_iter = cfg.SOLVER.EPOCHS, cfg.SOLVER.MAX_ITER
        if epochs <= 0:
            raise ConfigError(f"SOLVER.EPOCHS must be positive (every epoch key is a fraction of "
                              f"it, also under SOLVER.MAX_ITER), got {epochs}")
        if max_iter < 0:
            raise ConfigError(f"SOLVER.MAX_ITER must be 0 (EPOCHS x iterations per epoch) or "
                              f"positive, got {max_iter}")
        max_iter = max_iter or int(round(epochs * iters_per_epoch))
        if max_iter <= 0:
            raise ConfigError(f"SOLVER.EPOCHS {epochs} x {iters_per_epoch} iterations per epoch "
                              "gives a run without iterations")
        return cls(iters_per_epoch, epochs, max_iter)

    @property
    def scale(self) -> float:
        """Iterations of this run per iteration of the full recipe (1.0 without MAX_ITER)."""
        full = self.epochs * self.iters_per_epoch
        return 1.0 if self.max_iter == full else self.max_iter / full

    def iteration(self, epoch: float) -> float:
        """The (fractional) iteration at which the recipe reaches ``epoch``: iteration ``i`` is
        at or after it when ``i >= iteration(epoch)``. ``epoch * iters_per_epoch`` in a full
        run, the same fraction of a run shortened by MAX_ITER."""
        it = epoch * self.max_iter / self.epochs
        # Snap float noise (60 * 10 / 100 -> 6.000000000000001) so that a boundary meant to fall
        # on an iteration does.
        nearest = round(it)
        return float(nearest) if abs(it - nearest) <= 1e-9 * max(1.0, abs(it)) else it

    def fraction(self, iteration: float) -> float:
        """How far ``iteration`` is through the run (0 at the first step, 1 at the end)."""
        return iteration / self.iteration(self.epochs)
