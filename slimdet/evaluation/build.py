from typing import Dict, List, Optional

from fvcore.common.registry import Registry

from ..utils.registry import lookup

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Registry for evaluators: subclasses of :class:`Evaluator`, built as ``cls(cfg)``.
"""


class Evaluator:
    """``evaluate(method)`` returns flat metric names ("knn_top1/w1" ...) to values;
    ``required_datasets()`` names the data sets it reads, which a run checks when it starts
    (a missing test split must not be found after training)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def required_datasets(self) -> List[str]:
        return []

    def metrics(self) -> Optional[List[str]]:
        """The metrics its results hold per width (``<metric>/w<width>``), which
        ``TEST.BEST_METRIC`` is checked against when a run starts; None: not declared (that
        check is then left out)."""
        return None

    def evaluate(self, method) -> Dict[str, float]:
        raise NotImplementedError


def build_evaluators(cfg) -> List:
    """The evaluators named in ``cfg.TEST.EVALUATORS``."""
    return [lookup(EVALUATOR_REGISTRY, name, "TEST.EVALUATORS")(cfg) for name in cfg.TEST.EVALUATORS]
