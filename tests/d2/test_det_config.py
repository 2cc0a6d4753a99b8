"""Detection configs: MODEL.WIDTHS (the old MODEL.SLIM.WIDTHS named), one ConfigError naming the
file or key for every mistake, checked before anything is built."""
from __future__ import annotations

import pytest
from detectron2.data import MetadataCatalog

from slimdet.config import ConfigError
from slimdet.d2 import load_det_cfg, validate_det_cfg

from d2_helpers import SLIM_DEMO, STOCK_CONVERTED


def _error(*args, validate=False, **kwargs) -> str:
    with pytest.raises(ConfigError) as err:
        cfg = load_det_cfg(*args)
        if validate:
            validate_det_cfg(cfg, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_widths_key_is_pre_trainings(tmp_path):
    cfg = load_det_cfg(SLIM_DEMO, ["MODEL.WIDTHS", "[1.0, 0.5]"])
    assert cfg.MODEL.WIDTHS == [1.0, 0.5] and "WIDTHS" not in cfg.MODEL.SLIM
    validate_det_cfg(cfg)

    old = tmp_path / "old.yaml"
    old.write_text(f"_BASE_: {SLIM_DEMO}\nMODEL:\n  SLIM:\n    WIDTHS: [1.0, 0.5]\n")
    msg = _error(str(old))
    assert msg.startswith(f"{old}: ") and "MODEL.SLIM.WIDTHS was renamed to MODEL.WIDTHS" in msg
    msg = _error(SLIM_DEMO, ["MODEL.SLIM.WIDTHS", "[1.0, 0.5]"])
    assert msg.startswith("command line: ") and "renamed to MODEL.WIDTHS" in msg


def test_width_lists_are_checked_by_the_one_check():
    assert "MODEL.WIDTHS must start with 1.0 and be strictly decreasing, got [0.5, 1.0]" in \
        _error(SLIM_DEMO, ["MODEL.WIDTHS", "[0.5, 1.0]"], validate=True)
    assert "MODEL.WIDTHS must be multipliers in (0, 1]" in \
        _error(SLIM_DEMO, ["MODEL.WIDTHS", "[1.0, 2.0]"], validate=True)
    assert "TEST.SLIM_WIDTHS [0.3] has widths [0.3] that are not in MODEL.WIDTHS" in \
        _error(SLIM_DEMO, ["TEST.SLIM_WIDTHS", "[0.3]"], validate=True)
    assert "MODEL.SLIM.LOSS_WEIGHTING must be size, uniform or proportional, got 'sizes'" in \
        _error(SLIM_DEMO, ["MODEL.SLIM.LOSS_WEIGHTING", "sizes"], validate=True)
    # A stock Detectron2 config does not use the width keys.
    validate_det_cfg(load_det_cfg(STOCK_CONVERTED, ["MODEL.WIDTHS", "[0.5]", "DATASETS.TRAIN",
                                                    "('tiny_coco_train',)", "DATASETS.TEST",
                                                    "('tiny_coco_val',)"]))


def test_file_key_and_value_mistakes_name_them(tmp_path):
    assert "unknown config key MODEL.NOPE" in _error(SLIM_DEMO, ["MODEL.NOPE", "1"])
    assert "Type mismatch" in _error(SLIM_DEMO, ["SOLVER.MAX_ITER", "many"])
    assert "does not exist" in _error(str(tmp_path / "nowhere.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL: [\n")
    assert _error(str(broken)).startswith(f"{broken}: cannot parse it as YAML")
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("_BASE_: missing-base.yaml\n")
    assert "cannot read" in _error(str(orphan)) and "missing-base.yaml" in _error(str(orphan))


def test_data_sets_are_checked_before_anything_is_built(tmp_path, monkeypatch):
    msg = _error(SLIM_DEMO, ["DATASETS.TEST", "('tiny_coco_vall',)"], validate=True)
    assert "DATASETS.TEST: 'tiny_coco_vall' is not a registered data set; did you mean " \
           "tiny_coco_val" in msg
    # --eval-only reads only the test set.
    cfg = load_det_cfg(SLIM_DEMO, ["DATASETS.TRAIN", "('coco_2017_train',)"])
    validate_det_cfg(cfg, eval_only=True)
    with pytest.raises(ConfigError, match=r"DATASETS.TRAIN: 'coco_2017_train' needs .*train2017"):
        validate_det_cfg(cfg)
    # COCO 2017 is registered by Detectron2 (relative to where a job runs); not in tmp_path.
    monkeypatch.chdir(tmp_path)
    json_file = MetadataCatalog.get("coco_2017_val").json_file
    msg = _error(SLIM_DEMO, ["DATASETS.TEST", "('coco_2017_val',)"], validate=True, eval_only=True)
    assert f"DATASETS.TEST: 'coco_2017_val' needs {json_file}, which does not exist" in msg
    assert "datasets/README.md" in msg
