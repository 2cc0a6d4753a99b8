"""The tools' command lines: flags typed after the KEY VALUE overrides are read as flags."""
import pytest

from slimdet.engine import WidthsAction, parse_tool_args
from slimdet.engine.defaults import train_argument_parser


@pytest.mark.parametrize("argv, flags, opts", [
    # Detectron2's parser alone reads "--eval-only" here as a config key (REMAINDER).
    (["--config-file", "a.yaml", "MODEL.WEIGHTS", "w.pth", "--eval-only"],
     dict(config_file="a.yaml", eval_only=True), ["MODEL.WEIGHTS", "w.pth"]),
    # A flag with a value between overrides, a later flag, and a negative value that stays one.
    (["A.B", "1", "--num-gpus", "2", "C.D", "-1", "--resume"],
     dict(num_gpus=2, resume=True, eval_only=False), ["A.B", "1", "C.D", "-1"]),
    # A later flag wins, as argparse lets a repeated flag win.
    (["--config-file", "a.yaml", "A.B", "1", "--config-file", "b.yaml"],
     dict(config_file="b.yaml"), ["A.B", "1"]),
    # A word starting with "-" where a KEY stands that argparse takes as a value: kept, for the
    # config to report as an unknown key.
    (["A.B", "1", "-1", "2"], dict(num_gpus=1), ["A.B", "1", "-1", "2"]),
    (["--eval-only"], dict(eval_only=True), []),
])
def test_flags_after_overrides_are_flags(argv, flags, opts):
    args = parse_tool_args(train_argument_parser(), argv)
    assert {k: getattr(args, k) for k in flags} == flags
    assert args.opts == opts


def test_unknown_flag_after_overrides_fails_as_argparse_does(capsys):
    with pytest.raises(SystemExit) as e:
        parse_tool_args(train_argument_parser(), ["A.B", "1", "--evl-only"])
    assert e.value.code == 2
    assert "unrecognized arguments: --evl-only" in capsys.readouterr().err


def test_widths_list_then_overrides_then_flag():
    parser = train_argument_parser()
    parser.add_argument("--widths", action=WidthsAction, type=str)
    args = parse_tool_args(parser, ["--widths", "1.0", "0.5", "A.B", "1", "--eval-only", "C.D", "2"])
    assert args.widths == [1.0, 0.5]
    assert args.eval_only
    assert args.opts == ["A.B", "1", "C.D", "2"]


def _export_like_parser():
    """Required flags as tools/export_width.py has them, and a required choice of two."""
    import argparse

    parser = argparse.ArgumentParser(prog="export")
    parser.add_argument("--config-file", default="")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--width", type=float, required=True)
    parser.add_argument("--format", choices=("torchvision", "onnx"), default="torchvision")
    parser.add_argument("-o", "--output", required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--eager", action="store_true")
    mode.add_argument("--check-batch", type=int)
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    return parser


@pytest.mark.parametrize("argv", [
    # Every required flag before the overrides, an optional one after them.
    ["--weights", "w.pth", "--width", "1", "-o", "o.ts", "--eager", "A.B", "256",
     "--format", "onnx"],
    # Required flags after the overrides (and between them).
    ["--config-file", "c.yaml", "A.B", "256", "--weights", "w.pth", "--eager", "--width", "1",
     "--format", "onnx", "--output", "o.ts"],
])
def test_required_flags_may_stand_before_or_after_overrides(argv):
    parser = _export_like_parser()
    args = parse_tool_args(parser, argv)
    assert (args.weights, args.width, args.output, args.format) == ("w.pth", 1.0, "o.ts", "onnx")
    assert args.eager is True and args.check_batch is None  # the group's other default is back
    assert args.opts == ["A.B", "256"]
    # The parser is as it was: argparse alone still requires the flags.
    with pytest.raises(SystemExit):
        parser.parse_args(["--width", "1"])


def test_missing_required_flags_are_named_once_for_the_whole_command_line(capsys):
    parser = _export_like_parser()
    with pytest.raises(SystemExit) as e:
        parse_tool_args(parser, ["--weights", "w.pth", "A.B", "1", "--eager", "--width", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: -o/--output" in err
    assert "[--weights" not in err  # the usage still shows required flags as required
    with pytest.raises(SystemExit):
        parse_tool_args(parser, ["--weights", "w", "--width", "1", "-o", "o", "A.B", "1"])
    assert "one of the arguments --eager --check-batch is required" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--weights", "w", "--width", "1", "--eager", "--fromat", "onnx", "--output", "o"],
    ["--weights", "w", "--width", "1", "--eager", "A.B", "1", "--fromat", "onnx", "--output", "o"],
])
def test_typo_in_a_flag_is_reported_as_unknown_not_as_a_missing_required_flag(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse_tool_args(_export_like_parser(), argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --fromat" in err and "required" not in err
