from .slimmable import (PerWidthChoice, SlimConv2d, SlimLinear, SwitchableBatchNorm1d, SwitchableBatchNorm2d,
                        SwitchableLinear, WidthAware, init_weights, scaled)
from .width import check_widths, get_width, model_widths, set_width, use_width

__all__ = ["PerWidthChoice", "SlimConv2d", "SlimLinear", "SwitchableBatchNorm1d", "SwitchableBatchNorm2d",
           "SwitchableLinear", "WidthAware", "init_weights", "scaled", "check_widths", "get_width",
           "model_widths", "set_width", "use_width"]
