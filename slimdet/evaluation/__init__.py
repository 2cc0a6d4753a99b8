from .build import EVALUATOR_REGISTRY, Evaluator, build_evaluators
from .classification import ClassificationEvaluator, ProfilerEvaluator, evaluate_classification
from .knn import KNNEvaluator, knn_predict, knn_top1, topk_accuracy
from .profiler import count_macs, format_profile, measure_latency, profile_widths

__all__ = ["ClassificationEvaluator", "ProfilerEvaluator", "evaluate_classification", "KNNEvaluator", "knn_predict", "knn_top1", "Evaluator", "topk_accuracy", "EVALUATOR_REGISTRY", "build_evaluators", "count_macs", "format_profile",
           "measure_latency", "profile_widths"]
