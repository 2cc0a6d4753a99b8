from .config import CfgNode, ConfigError, get_cfg, validate_cfg

__all__ = ["CfgNode", "ConfigError", "get_cfg", "validate_cfg"]
