"""docs/method.md §4's augmentation recipes as data: one list of :class:`ViewSpec` per recipe name.

The three pipelines build their ops from this one table, so they cannot drift apart: per-image
torchvision ops in loader workers (``transforms.py``), batched tensor ops on the device for
in-memory sets (``batch_transforms.py``) and DALI graphs (``dali.py``). ``INPUT.AUGMENTATION``
names the recipe; crop size and crop scale come from ``INPUT.CROP_SIZE`` and
``INPUT.MIN_SCALE`` / ``MAX_SCALE``. The evaluation view (:class:`EvalSpec`: resize the short
side, centre crop) is defined here too, so in-memory and on-disk data are evaluated alike.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Sequence, Tuple

from ..config import ConfigError


@dataclass
class ViewSpec:
    """One view's random augmentation; probabilities are per sample."""
    crop_size: int = 224
    scale: Tuple[float, float] = (0.2, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0


# docs/method.md §4's recipes; crop size and crop scale come from the config (INPUT.CROP_SIZE,
# INPUT.MIN_SCALE / MAX_SCALE: 0.2 for MoCo v2 / BYOL, 0.08 for SimCLR and LinearEval).
_BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)
RECIPE_VIEWS: Dict[str, List[ViewSpec]] = {
    # crop, jitter (0.4, 0.4, 0.4, 0.1) p0.8, grey p0.2, blur p0.5, flip; two views
    "MoCoV2": [ViewSpec(), ViewSpec()],
    # asymmetric: view 1 blur p1.0; view 2 blur p0.1 + solarize p0.2
    "BYOL": [ViewSpec(jitter=_BYOL_JITTER, blur_p=1.0),
             ViewSpec(jitter=_BYOL_JITTER, blur_p=0.1, solarize_p=0.2)],
    # jitter (0.8, 0.8, 0.8, 0.2)
    "SimCLR": [ViewSpec(jitter=(0.8, 0.8, 0.8, 0.2)), ViewSpec(jitter=(0.8, 0.8, 0.8, 0.2))],
    # the linear probe's / supervised training's crop + flip
    "LinearEval": [ViewSpec(jitter_p=0.0, gray_p=0.0, blur_p=0.0)],
}


def views_of(recipe: str, crop_size: int, scale: Sequence[float]) -> List[ViewSpec]:
    """The views of ``recipe`` at ``crop_size`` with crop ``scale``."""
    if recipe not in RECIPE_VIEWS:
        raise ConfigError(f"INPUT.AUGMENTATION: {recipe!r} is not a recipe; recipes: "
                          f"{', '.join(sorted(RECIPE_VIEWS))}")
    return [replace(v, crop_size=crop_size, scale=tuple(scale)) for v in RECIPE_VIEWS[recipe]]


def recipe_views(cfg) -> List[ViewSpec]:
    return views_of(cfg.INPUT.AUGMENTATION, cfg.INPUT.CROP_SIZE,
                    (cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE))


@dataclass(frozen=True)
class EvalSpec:
    """The deterministic evaluation view: short side resized to ``resize``, then the centre
    ``crop_size`` x ``crop_size`` square."""
    resize: int
    crop_size: int


def eval_resize(crop_size: int, test_resize: int, crop_fraction: float) -> int:
    """Short side before the centre crop: ``test_resize``, or when it is 0
    ``floor(crop_size / crop_fraction)`` (the ImageNet protocol's 224 / 0.875 = 256; a 32 px
    crop gives 36), so the default suits images of any size."""
    if test_resize:
        return test_resize
    # + 1e-6: a fraction without an exact binary value must not floor 100.0 to 99.
    return int(crop_size / crop_fraction + 1e-6)


def eval_spec(cfg) -> EvalSpec:
    """The evaluation view of ``INPUT.CROP_SIZE`` / ``TEST_RESIZE`` / ``TEST_CROP_FRACTION``."""
    i = cfg.INPUT
    return EvalSpec(eval_resize(i.CROP_SIZE, i.TEST_RESIZE, i.TEST_CROP_FRACTION), i.CROP_SIZE)
