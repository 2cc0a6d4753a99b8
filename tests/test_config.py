import pytest

from slimdet.config import ConfigError, get_cfg
from slimdet.engine import load_cfg
from slimdet.modeling import build_backbone


def test_base_inheritance_and_overrides(tmp_path):
    base = tmp_path / "Base.yaml"
    base.write_text("MODEL:\n  BACKBONE:\n    DEPTH: 18\nSOLVER:\n  BASE_LR: 0.5\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: Base.yaml\nSOLVER:\n  BASE_LR: 1\n")
    cfg = load_cfg(str(child), ["MODEL.WIDTHS", "[1, 0.5]", "SOLVER.EPOCHS", "3"])
    assert cfg.MODEL.BACKBONE.DEPTH == 18
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.MODEL.WIDTHS == [1.0, 0.5] and cfg.SOLVER.EPOCHS == 3


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*SOLVER\.BASE_LRR"):
        load_cfg(str(f))


def test_unknown_key_on_command_line():
    with pytest.raises(ConfigError, match=r"MODEL\.WIDTH\b.*0\.5"):
        load_cfg("", ["MODEL.WIDTH", "0.5"])


def test_wrong_type_names_key_and_value(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("SOLVER:\n  EPOCHS: ten\n")
    with pytest.raises(ConfigError, match=r"t\.yaml.*ten.*SOLVER\.EPOCHS"):
        load_cfg(str(f))


def test_missing_base_names_both_files(tmp_path):
    f = tmp_path / "child.yaml"
    f.write_text("_BASE_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml.*nowhere\.yaml"):
        load_cfg(str(f))
    with pytest.raises(ConfigError, match="not found"):
        load_cfg(str(tmp_path / "absent.yaml"))


def test_bad_widths_rejected():
    with pytest.raises(ConfigError, match=r"MODEL\.WIDTHS.*1\.5"):
        load_cfg("", ["MODEL.WIDTHS", "[1.0, 1.5]"])
    with pytest.raises(ConfigError, match=r"MODEL\.WIDTHS.*0\.5, 1\.0"):
        load_cfg("", ["MODEL.WIDTHS", "[0.5, 1.0]"])


def test_unregistered_backbone_lists_choices():
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "ResNeXtFoo"
    with pytest.raises(ConfigError, match=r"MODEL\.BACKBONE\.NAME.*ResNeXtFoo.*SlimResNet"):
        build_backbone(cfg)


def test_every_key_is_documented():
    """defaults.py puts a comment or a self-explaining name above every key."""
    import slimdet.config.defaults as d
    src = open(d.__file__).read()
    assert src.count("_C.") > 80
