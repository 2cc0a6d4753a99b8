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


@pytest.mark.parametrize("opts, match", [
    (["SOLVER.MAX_ITER", "OUTPUT_DIR", "out"],
     r"SOLVER\.MAX_ITER has no value \(the word after it, OUTPUT_DIR, is a config key\)"),
    (["SOLVER.MAX_ITER", "10", "OUTPUT_DIR"], r"OUTPUT_DIR has no value"),
])
def test_override_without_value_is_named(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_cfg("", opts)


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


def test_imagenet_recipes_evaluate_at_resize_256_crop_224():
    from pathlib import Path

    from slimdet.data.recipes import EvalSpec, eval_spec

    root = Path(__file__).resolve().parents[2] / "configs"
    names = ["slimclr_mocov2_800ep", "slimclr_mocov3_300ep", "slim_simclr_100ep",
             "mocov2_r50_200ep", "lincls/mocov2", "lincls/mocov3", "supervised/slim_r50"]
    for name in names:
        assert eval_spec(load_cfg(str(root / f"{name}.yaml"))) == EvalSpec(256, 224), name
    # The default follows the crop: small images are not evaluated inside an upscale.
    assert eval_spec(load_cfg("", ["INPUT.CROP_SIZE", "32"])) == EvalSpec(36, 32)


@pytest.mark.parametrize("opts,match", [
    (["MODEL.BACKBONE.IN_CHANNELS", "1"], r"INPUT\.PIXEL_MEAN has 3 values.*IN_CHANNELS is 1"),
    (["INPUT.PIXEL_STD", "[0.2, 0.2]"], r"INPUT\.PIXEL_STD has 2 values"),
    (["MODEL.BACKBONE.IN_CHANNELS", "4"], r"IN_CHANNELS must be 1.*or 3.*got 4"),
    (["INPUT.TEST_RESIZE", "200"], r"INPUT\.TEST_RESIZE 200 is smaller than INPUT\.CROP_SIZE 224"),
    (["INPUT.TEST_CROP_FRACTION", "1.5"], r"INPUT\.TEST_CROP_FRACTION.*1\.5"),
    # Detectron2's 0-255 statistics, copied: every image would normalise to about -2.
    (["INPUT.PIXEL_MEAN", "[123.675, 116.28, 103.53]"],
     r"^INPUT\.PIXEL_MEAN \[123\.675, 116\.28, 103\.53\] is not in \[0, 1\]: .*divided by "
     r"255: \[0\.485, 0\.456, 0\.406\]\)$"),
    (["INPUT.PIXEL_STD", "[58.395, 57.12, 57.375]"], r"INPUT\.PIXEL_STD .*\[0\.229, 0\.224, 0\.225\]"),
    (["INPUT.PIXEL_MEAN", "[-0.1, 0.4, 0.4]"], r"INPUT\.PIXEL_MEAN \[-0\.1, 0\.4, 0\.4\] is not in \[0, 1\].*units$"),
])
def test_input_keys_checked_against_each_other(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_cfg("", opts)


def test_width_that_empties_a_layer_is_refused_naming_the_layer():
    from slimdet.modeling import build_model

    cfg = load_cfg("configs/demo/slimclr_mocov2_demo.yaml", ["MODEL.WIDTHS", "[1.0, 0.001]"])
    with pytest.raises(ConfigError, match=r"MODEL\.WIDTHS: width 0\.001 leaves layer "
                                          r"backbone\.conv1 \(16 channels.*1/16 = 0\.0625"):
        build_model(cfg)
    # The head counts too: a 32-unit hidden layer at width 1/32 keeps one unit, below it none.
    cfg = load_cfg("configs/demo/slimclr_mocov2_demo.yaml", [
        "MODEL.BACKBONE.BASE_CHANNELS", "64", "MODEL.MOCOV2.HIDDEN_DIM", "32",
        "MODEL.WIDTHS", "[1.0, 0.03125]"])
    from slimdet.layers import set_width

    model = build_model(cfg)
    set_width(model, 0.03125)
    assert model.projector[0].active_features() == (16, 1)
    cfg.MODEL.WIDTHS = [1.0, 0.03]
    with pytest.raises(ConfigError, match=r"layer projector\.0 \(32 channels"):
        build_model(cfg)


def test_a_renamed_key_names_its_new_name(tmp_path):
    """MODEL.MOCO became MODEL.MOCOV2: old configs and overrides fail with the new key."""
    with pytest.raises(ConfigError, match=r"MODEL.MOCO was renamed MODEL.MOCOV2: use "
                                          r"MODEL.MOCOV2.QUEUE_SIZE"):
        load_cfg("", ["MODEL.MOCO.QUEUE_SIZE", "64"])
    old = tmp_path / "old.yaml"
    old.write_text("MODEL:\n  MOCO:\n    QUEUE_SIZE: 64\n")
    with pytest.raises(ConfigError, match=r"old.yaml: unknown config key MODEL.MOCO; .*MODEL.MOCOV2"):
        load_cfg(str(old))
    assert load_cfg("", ["MODEL.MOCOV2.QUEUE_SIZE", "64"]).MODEL.MOCOV2.QUEUE_SIZE == 64


@pytest.mark.parametrize("key,value,match", [
    ("TEST.KNN.K", "0", "must be positive, got 0"),  # kNN would score chance, exit 0
    ("TEST.KNN.TEMPERATURE", "0.0", "must be positive"),
    ("TEST.IMS_PER_BATCH", "-5", "must be positive"),  # failed after training
    ("LOG_PERIOD", "0", "must be positive"),  # ZeroDivisionError in the loop
    ("SOLVER.BASE_LR", "-1.0", "must not be negative"),
    ("DATALOADER.NUM_WORKERS", "-1", "must not be negative"),
    ("DATASETS.TRAIN_SUBSET", "-3", "must not be negative"),
    ("SOLVER.CHECKPOINT_PERIOD", "-1", "must not be negative"),
    ("MODEL.MOCOV2.MOMENTUM", "1.5", r"must be in \[0, 1\]"),
    ("SOLVER.GAMMA", "-1.0", "must be positive"),  # trained on at a negative LR, exit 0
    ("SOLVER.REFERENCE_BATCH_SIZE", "-1", "must not be negative"),  # torch's SGD traceback
    ("MODEL.DEVICE", "gpu", "must be cpu, cuda or ''"),
])
def test_numeric_keys_out_of_range_are_refused_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " " + match):
        load_cfg("", [key, value])
    # The boundary values that mean something (0 = all / default) are accepted.
    if "negative" in match:
        load_cfg("", [key, "0" if "." not in value else "0.0"])


def test_stage_outputs_are_refused_for_the_methods_that_read_the_pooled_feature():
    with pytest.raises(ConfigError, match=r"MODEL\.BACKBONE\.OUT_FEATURES \['res5'\]: every "
                                          r"method of tools/train_net\.py reads"):
        load_cfg("", ["MODEL.BACKBONE.OUT_FEATURES", "['res5']"])


def test_a_sandwich_config_without_calibration_names_both_ways_out():
    with pytest.raises(ConfigError, match=r"sandwich leaves no width with its own BN statistics: "
                                          r"set TEST\.CALIBRATE_BATCHES .*recalibrate_bn\.py, "
                                          r"MODEL\.SLIM\.MODE fixed"):
        load_cfg("", ["MODEL.WIDTHS", "[1.0, 0.5]", "MODEL.SLIM.MODE", "sandwich"])
    load_cfg("", ["MODEL.WIDTHS", "[1.0, 0.5]", "MODEL.SLIM.MODE", "sandwich",
                  "TEST.CALIBRATE_BATCHES", "2"])
