from .build import build_test_loader, build_train_loader
from .catalog import get_dataset, register_dataset, registered_datasets
from .in_memory import InMemoryImageDataset, stratified_subset

__all__ = ["build_test_loader", "build_train_loader", "get_dataset", "register_dataset",
           "registered_datasets", "InMemoryImageDataset", "stratified_subset"]
