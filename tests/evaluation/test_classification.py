"""slimdet/evaluation/classification.py: an evaluation says how many images it evaluates."""
import os

from slimdet.engine import load_cfg
from slimdet.evaluation import ClassificationEvaluator
from slimdet.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE = os.path.join(ROOT, "configs/demo/lincls_demo.yaml")


def test_classification_logs_the_number_of_test_images_once(caplog):
    cfg = load_cfg(PROBE, ["MODEL.BACKBONE.BASE_CHANNELS", 8, "MODEL.DEVICE", "cpu",
                           "DATASETS.TEST_SUBSET", 301, "TEST.IMS_PER_BATCH", 100])
    caplog.set_level("INFO", logger="slimdet")
    results = ClassificationEvaluator(cfg).evaluate(build_model(cfg))
    assert sorted(results) == [f"top{k}/w{w}" for k in (1, 5) for w in ("0.25", "0.5", "1")]
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("Classification:")]
    assert lines == ["Classification: 301 test images of 'fashion_mnist_test'"]
