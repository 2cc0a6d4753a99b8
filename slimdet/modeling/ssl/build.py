from fvcore.common.registry import Registry
from torch import nn

from ...utils.registry import lookup

SSL_REGISTRY = Registry("SSL")
SSL_REGISTRY.__doc__ = """
Registry for training methods (self-supervised, supervised, linear probe). A registered class is
built as ``cls(cfg)`` and implements :class:`slimdet.modeling.ssl.base.SSLMethod`.
"""


def build_model(cfg) -> nn.Module:
    """The method named by ``cfg.MODEL.METHOD`` (on the CPU; the trainer moves it)."""
    return lookup(SSL_REGISTRY, cfg.MODEL.METHOD, "MODEL.METHOD")(cfg)
