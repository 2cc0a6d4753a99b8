"""Analysis: per-width gradient diagnostics, loss landscapes with trajectories, plots."""
from .gradients import per_width_gradients, preserved_state, shared_parameters, width_loop_gradients
from .hooks import GradientDiagnosticsHook, TrajectoryHook

__all__ = ["per_width_gradients", "preserved_state", "shared_parameters", "width_loop_gradients",
           "GradientDiagnosticsHook", "TrajectoryHook"]
