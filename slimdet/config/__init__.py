from .config import CfgNode, ConfigError, get_cfg, validate_cfg
from .widths import evaluation_widths, untrained_widths

__all__ = ["CfgNode", "ConfigError", "get_cfg", "validate_cfg", "evaluation_widths",
           "untrained_widths"]
