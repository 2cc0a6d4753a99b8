from typing import List

from fvcore.common.registry import Registry

from ..utils.registry import lookup

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Registry for evaluators. A registered class is built as ``cls(cfg)`` and has
``evaluate(model) -> dict`` returning flat metric names ("knn_top1/w1.0" ...) to values.
"""


def build_evaluators(cfg) -> List:
    """The evaluators named in ``cfg.TEST.EVALUATORS``."""
    return [lookup(EVALUATOR_REGISTRY, name, "TEST.EVALUATORS")(cfg) for name in cfg.TEST.EVALUATORS]
