import torch
from fvcore.common.registry import Registry
from torch import nn

from ...config import ConfigError
from ...layers import narrowest_layer, scaled
from ...utils.registry import lookup

SSL_REGISTRY = Registry("SSL")
SSL_REGISTRY.__doc__ = """
Registry for training methods (self-supervised, supervised, linear probe). A registered class is
built as ``cls(cfg)`` and implements :class:`slimdet.modeling.ssl.base.SSLMethod`.
"""


def build_model(cfg) -> nn.Module:
    """The method named by ``cfg.MODEL.METHOD`` (on the CPU; the trainer moves it), after
    :func:`check_widths` of its architecture."""
    cls = lookup(SSL_REGISTRY, cfg.MODEL.METHOD, "MODEL.METHOD")
    check_widths(cfg, cls)
    return cls(cfg)


def check_widths(cfg, cls) -> None:
    """Every layer of the ``cls(cfg)`` network keeps at least one channel at every width of
    ``MODEL.WIDTHS``, else a ConfigError naming the width, the layer and the smallest width
    allowed. The network is built at full width only, on the meta device (no memory, no init
    cost, no zero-sized layer)."""
    narrowest = min(cfg.MODEL.WIDTHS)
    full_cfg = cfg.clone()
    full_cfg.defrost()
    full_cfg.MODEL.WIDTHS, full_cfg.MODEL.WEIGHTS = [1.0], ""
    with torch.device("meta"):
        name, channels = narrowest_layer(cls(full_cfg))
    if scaled(channels, narrowest) < 1:
        raise ConfigError(
            f"MODEL.WIDTHS: width {narrowest:g} leaves layer {name} ({channels} channels at full "
            f"width) with none; with this network every width must be at least "
            f"1/{channels} = {1 / channels:.6g}")
