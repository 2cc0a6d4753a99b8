"""slimdet/evaluation/knn.py: an evaluation says how many images it evaluates."""
import os

from slimdet.engine import load_cfg
from slimdet.evaluation import KNNEvaluator
from slimdet.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "configs/demo/slimclr_mocov2_demo.yaml")


def test_knn_logs_the_bank_and_query_sizes_it_evaluates_once(caplog):
    # Neither size is a multiple of the 10 classes: the subsets hold exactly these images.
    cfg = load_cfg(DEMO, ["MODEL.BACKBONE.BASE_CHANNELS", 8, "MODEL.MOCOV2.HIDDEN_DIM", 32,
                          "MODEL.MOCOV2.DIM", 16, "MODEL.MOCOV2.QUEUE_SIZE", 64,
                          "MODEL.DEVICE", "cpu", "DATASETS.TRAIN_SUBSET", 253,
                          "DATASETS.TEST_SUBSET", 101, "TEST.IMS_PER_BATCH", 100])
    caplog.set_level("INFO", logger="slimdet")
    results = KNNEvaluator(cfg).evaluate(build_model(cfg))
    assert len(results) == 3  # three widths evaluated, the sizes logged once
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kNN:")]
    assert lines == ["kNN: 101 test images of DATASETS.TEST 'fashion_mnist_test' against a "
                     "memory bank of 253 images of DATASETS.TRAIN 'fashion_mnist_train'"]
