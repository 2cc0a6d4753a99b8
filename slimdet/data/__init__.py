from .build import EvalBatches, Shard, build_test_loader, build_train_loader, verify_dataset
from .catalog import get_dataset, register_dataset, register_format, registered_datasets
from .in_memory import InMemoryImageDataset, stratified_subset

__all__ = ["EvalBatches", "Shard", "build_test_loader", "build_train_loader", "verify_dataset",
           "get_dataset", "register_dataset", "register_format", "registered_datasets",
           "InMemoryImageDataset", "stratified_subset"]
