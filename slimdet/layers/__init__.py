from .slimmable import (PerWidthChoice, SlimConv2d, SlimLinear, SwitchableBatchNorm,
                        SwitchableBatchNorm1d, SwitchableBatchNorm2d, SwitchableLinear,
                        UncalibratedWidthError, WidthAware, init_weights, normalized_width, scaled)
from .width import (check_channels, get_width, model_widths, narrowest_layer, set_width,
                    sliced_sizes, use_width)
from .any_width import (CalibrationAware, add_widths, available_widths, mark_calibrated,
                        mark_uncalibrated, recalibrate_bn, uncalibrated_widths)

__all__ = ["PerWidthChoice", "SlimConv2d", "SlimLinear", "SwitchableBatchNorm",
           "SwitchableBatchNorm1d", "SwitchableBatchNorm2d", "SwitchableLinear",
           "UncalibratedWidthError", "WidthAware", "init_weights", "normalized_width", "scaled",
           "check_channels", "get_width", "model_widths", "narrowest_layer", "set_width",
           "sliced_sizes", "use_width", "add_widths",
           "available_widths", "CalibrationAware", "mark_calibrated", "mark_uncalibrated",
           "recalibrate_bn", "uncalibrated_widths"]
