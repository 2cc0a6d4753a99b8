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
