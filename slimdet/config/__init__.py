from .config import CfgNode, ConfigError, config_files, config_inputs, get_cfg, validate_cfg
from .widths import check_widths, evaluation_widths, normalized_width, untrained_widths

__all__ = ["CfgNode", "ConfigError", "config_files", "config_inputs", "get_cfg", "validate_cfg", "check_widths", "evaluation_widths", "normalized_width",
           "untrained_widths"]
