from .build import EVALUATOR_REGISTRY, build_evaluators
from .profiler import count_macs, format_profile, measure_latency, profile_widths

__all__ = ["EVALUATOR_REGISTRY", "build_evaluators", "count_macs", "format_profile",
           "measure_latency", "profile_widths"]
