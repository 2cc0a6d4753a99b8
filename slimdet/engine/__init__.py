from .defaults import default_argument_parser, default_setup, load_cfg, seed_all, setup
from .launch import launch

__all__ = ["default_argument_parser", "default_setup", "load_cfg", "seed_all", "setup", "launch"]
