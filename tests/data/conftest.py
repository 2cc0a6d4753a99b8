"""Fixtures of the data tests."""
import pytest

from image_helpers import make_folder


@pytest.fixture
def image_folder(tmp_path) -> str:
    """``tmp/imagenet/train/<class>/*.JPEG``: 3 classes x 6 images; returns the train folder."""
    return make_folder(str(tmp_path / "imagenet" / "train"), ["cat", "dog", "eel"], 6)
