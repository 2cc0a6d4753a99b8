from .config import CfgNode, ConfigError, get_cfg, validate_cfg
from .widths import check_widths, evaluation_widths, normalized_width, untrained_widths

__all__ = ["CfgNode", "ConfigError", "get_cfg", "validate_cfg", "check_widths", "evaluation_widths", "normalized_width",
           "untrained_widths"]
