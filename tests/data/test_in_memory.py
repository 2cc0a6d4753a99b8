"""slimdet/data/in_memory.py: DATASETS.TRAIN_SUBSET / TEST_SUBSET take exactly the images asked
for, spread evenly over the classes (the embedded Fashion-MNIST and image folders alike)."""
import torch

from slimdet.data.catalog import get_dataset
from slimdet.data.in_memory import stratified_subset

from image_helpers import data_cfg, make_folder


def _per_class(labels) -> list:
    return torch.bincount(torch.as_tensor(labels), minlength=10).tolist()


def test_a_subset_that_is_no_multiple_of_the_classes_has_exactly_its_size():
    cfg = data_cfg(TRAIN="fashion_mnist_train", TEST="fashion_mnist_test")
    cfg.DATASETS.TRAIN_SUBSET, cfg.DATASETS.TEST_SUBSET = 1283, 301
    train, test = get_dataset(cfg.DATASETS.TRAIN, cfg), get_dataset(cfg.DATASETS.TEST, cfg)
    # The remainder goes to the first classes in label order, one image each.
    assert len(test) == 301 and _per_class(test.labels) == [31] + [30] * 9
    assert len(train) == 1283 and _per_class(train.labels) == [129] * 3 + [128] * 7
    # A multiple of the class count (the demo's 10000 / 2000) is the first n / 10 of each class,
    # as before: the demo's numbers do not move.
    cfg.DATASETS.TEST_SUBSET = 300
    even = get_dataset(cfg.DATASETS.TEST, cfg)
    all_labels = get_dataset(cfg.DATASETS.TEST, data_cfg(TEST="fashion_mnist_test")).labels
    first_30 = torch.cat([torch.nonzero(all_labels == c).flatten()[:30] for c in range(10)])
    assert torch.equal(even.labels, all_labels[first_30.sort().values])
    assert torch.equal(even.images, get_dataset(cfg.DATASETS.TEST, data_cfg(
        TEST="fashion_mnist_test")).images[first_30.sort().values])
    # 301 is those 300 and the next image of class 0.
    assert set(first_30.tolist()) < set(stratified_subset(all_labels, 301).tolist())


def test_a_class_too_small_for_its_share_gives_all_it_has_and_the_others_make_up_the_rest(caplog):
    labels = torch.tensor([0] * 2 + [1] * 10 + [2] * 10)
    keep = stratified_subset(labels, 15)
    assert len(keep) == 15 and torch.bincount(labels[keep]).tolist() == [2, 7, 6]
    assert keep.tolist() == sorted(set(keep.tolist()))  # sorted, no image twice
    assert torch.bincount(labels[stratified_subset(labels, 2)]).tolist() == [1, 1]
    assert stratified_subset(labels, 22).tolist() == list(range(22))
    assert "warn" not in caplog.text.lower() and not caplog.records
    # More than there is: all of it, and a warning says so.
    assert stratified_subset(labels, 30).tolist() == list(range(22))
    assert "a subset of 30 images was asked of a data set of 22" in caplog.text


def test_a_folder_subset_has_exactly_its_size(tmp_path):
    train = make_folder(str(tmp_path / "train"), ["cat", "dog", "eel"], 6)
    test = make_folder(str(tmp_path / "test"), ["cat", "dog", "eel"], 3)
    cfg = data_cfg(TRAIN=f"folder:{train}", TEST=f"folder:{test}")
    cfg.DATASETS.TRAIN_SUBSET, cfg.DATASETS.TEST_SUBSET = 7, 4
    assert get_dataset(cfg.DATASETS.TRAIN, cfg).labels == [0, 0, 0, 1, 1, 2, 2]
    assert get_dataset(cfg.DATASETS.TEST, cfg).labels == [0, 0, 1, 2]
