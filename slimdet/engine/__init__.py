from .defaults import (WidthsAction, default_argument_parser, default_setup, evaluate_only,
                       launch_cli, load_cfg, parse_tool_args, run_cli, seed_all, setup,
                       train_argument_parser, verify_run)
from .launch import launch
from .run_folder import start_run_files

__all__ = ["WidthsAction", "parse_tool_args", "default_argument_parser", "default_setup",
           "evaluate_only", "launch_cli", "run_cli", "load_cfg", "seed_all", "setup",
           "start_run_files", "train_argument_parser", "verify_run", "launch"]
