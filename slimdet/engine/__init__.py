from .defaults import (default_argument_parser, default_setup, launch_cli, load_cfg, run_cli, seed_all,
                       setup)
from .launch import launch

__all__ = ["default_argument_parser", "default_setup", "launch_cli", "run_cli", "load_cfg", "seed_all", "setup", "launch"]
