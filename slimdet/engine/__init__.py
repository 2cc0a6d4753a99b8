from .defaults import (WidthsAction, default_argument_parser, default_setup, launch_cli, load_cfg,
                       parse_tool_args, run_cli, seed_all, setup)
from .launch import launch

__all__ = ["WidthsAction", "parse_tool_args", "default_argument_parser", "default_setup", "launch_cli", "run_cli", "load_cfg", "seed_all", "setup", "launch"]
