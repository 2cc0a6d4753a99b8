"""Fixtures of the Detectron2 tests: the prepared tiny COCO set (never downloaded by a test)."""
import pytest

from slimdet.d2 import tiny_coco_source


@pytest.fixture(scope="session")
def tiny_coco() -> str:
    """The tiny COCO set's source line; fails (does not skip) when set-up has not built it."""
    try:
        return tiny_coco_source()
    except FileNotFoundError as e:
        pytest.fail(f"{e} (run the tests from the repository root, as make test does)",
                    pytrace=False)
