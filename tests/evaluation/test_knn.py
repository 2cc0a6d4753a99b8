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


def test_merged_top_k_of_bank_shares_is_the_top_k_of_the_whole_bank():
    """What a job of several processes computes (each process's k nearest among its share of
    the bank, merged on the main process) equals the one-process top k, exactly. The features
    are multiples of 2^-10 in [-1, 1], 16 of them (not normalised: the merge does not care), so
    every partial sum of a dot product (at most 16 in size, in steps of 2^-20: 24 bits) is exact
    in fp32 whatever order a matrix product of a share sums in (a one-row share is a
    matrix-vector product, whose last bits differ on random floats), and no two similarities
    at the top of a row are equal, so the k nearest are one set in one order."""
    import torch

    from slimdet.data import Shard
    from slimdet.evaluation.knn import (knn_candidates, knn_predict, knn_vote,
                                        merge_knn_candidates, sharded_knn_predict)

    g = torch.Generator().manual_seed(0)
    bank = torch.randint(-1024, 1025, (257, 16), generator=g) / 1024
    labels = torch.randint(0, 10, (257,), generator=g)
    test = torch.randint(-1024, 1025, (40, 16), generator=g) / 1024
    k = 30
    whole_sim, whole_idx = (test @ bank.T).topk(k, dim=1)
    top_and_next = (test @ bank.T).topk(k + 1, dim=1).values
    assert (top_and_next[:, 1:] < top_and_next[:, :-1]).all()  # no ties: one answer
    # 300 processes: shares of 0 or 1 images, padded far below k.
    for world_size in (1, 2, 3, 8, 300):
        shares = [Shard(rank, world_size).bounds(len(bank)) for rank in range(world_size)]
        assert shares[0][0] == 0 and shares[-1][1] == len(bank)
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))  # contiguous, in order
        candidates = [knn_candidates(test, bank[s:e], labels[s:e], k) for s, e in shares]
        top_sim, top_labels = merge_knn_candidates([c[0] for c in candidates],
                                                   [c[1] for c in candidates], k)
        assert torch.equal(top_sim, whole_sim), world_size
        assert torch.equal(top_labels, labels[whole_idx]), world_size
    scores = knn_predict(test, bank, labels, 10, k, 0.1)
    assert torch.equal(knn_vote(top_sim, top_labels, 10, 0.1), scores)
    # In one process the collective version is the same computation (chunks of 7 test images).
    assert torch.equal(sharded_knn_predict(test, bank, labels, 10, len(bank), k, 0.1, chunk=7),
                       scores)
