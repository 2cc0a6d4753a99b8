#!/usr/bin/env python
"""Make the ``pb1-detectron2==0.6`` sdist installable as pure Python on current torch/numpy/Pillow.

The sdist is upstream Detectron2 v0.6 without its C++ sources. Every edit below asserts that the
text it replaces was found, so a different sdist fails loudly instead of being half-patched.

Usage: python scripts/patch_detectron2.py SDIST_DIR
"""
import re
import sys
from pathlib import Path

SETUP_PY = '''\
# Rewritten by slimdet/scripts/patch_detectron2.py: pure-Python install, no C++ extension.
import glob
import os
from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
os.chdir(here)
configs = [
    os.path.relpath(p, "detectron2/model_zoo")
    for p in glob.glob("detectron2/model_zoo/configs/**/*", recursive=True)
    if p.endswith((".yaml", ".py"))
]
PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
setup(
    name="detectron2",
    version="0.6",
    packages=find_packages(exclude=("configs", "tests*", "projects*")) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2.model_zoo": configs},
    python_requires=">=3.7",
)
'''


def edit(path: Path, old: str, new: str, count: int = 1, regex: bool = False) -> None:
    text = path.read_text()
    if regex:
        text2, n = re.subn(old, new, text)
    else:
        n = text.count(old)
        text2 = text.replace(old, new)
    if n < count:
        raise SystemExit(f"patch_detectron2: expected {count}+ match(es) of {old!r} in {path}, found {n}")
    path.write_text(text2)


def main(root: Path) -> None:
    d2 = root / "detectron2"
    if not (d2 / "__init__.py").is_file():
        raise SystemExit(f"patch_detectron2: {root} does not look like the detectron2 sdist")
    if not (d2 / "model_zoo" / "configs" / "Base-RCNN-FPN.yaml").is_file():
        raise SystemExit(f"patch_detectron2: model-zoo configs missing under {d2 / 'model_zoo'}")
    (root / "setup.py").write_text(SETUP_PY)
    for p in (root / "pyproject.toml",):
        if p.exists():
            p.unlink()

    # 2. The compiled extension does not exist: import it optionally.
    optional_c = "try:\n    from detectron2 import _C\nexcept ImportError:  # pure-Python install\n    _C = None\n"
    for rel in ("layers/deform_conv.py", "layers/rotated_boxes.py", "layers/roi_align_rotated.py",
                "evaluation/fast_eval_api.py"):
        edit(d2 / rel, "from detectron2 import _C\n", optional_c)

    # 3. pkg_resources is gone from setuptools >= 81.
    mz = d2 / "model_zoo" / "model_zoo.py"
    edit(mz, "import pkg_resources\n", "")
    edit(mz, 'pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
         'os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)')

    # 4. Pillow >= 10 removed Image.LINEAR.
    edit(d2 / "data/transforms/transform.py", "Image.LINEAR", "Image.BILINEAR")

    # 5. numpy >= 1.24 removed the np.bool/int/float/str/object aliases.
    alias = r"\bnp\.(bool|int|float|str|object)\b(?!_)"
    n_files = 0
    for py in d2.rglob("*.py"):
        text = py.read_text()
        new = re.sub(alias, lambda m: m.group(1), text)
        if new != text:
            py.write_text(new)
            n_files += 1
    if n_files < 5:
        raise SystemExit(f"patch_detectron2: expected numpy aliases in 5+ files, found {n_files}")
    print(f"patch_detectron2: patched {root} (numpy aliases in {n_files} files)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
