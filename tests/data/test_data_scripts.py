"""datasets/prepare_lmdb.py and datasets/export_fashion_mnist.py end a user mistake in one
``error:`` line and exit status 2 (no traceback)."""
import os
import pathlib
import subprocess
import sys

from image_helpers import make_folder
from slimdet.data.datasets import FolderDataset, write_lmdb

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(REPO / "datasets" / script), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess, *parts: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_prepare_lmdb_user_mistakes_are_one_line(image_folder, tmp_path):
    _one_error_line(_run("prepare_lmdb.py", str(tmp_path / "nope"), str(tmp_path / "a.lmdb")),
                    "image folder not found", str(tmp_path / "nope"))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    _one_error_line(_run("prepare_lmdb.py", image_folder, str(a_file), "--no-progress"),
                    f"LMDB output {a_file} is a file")
    assert a_file.read_text() == "mine"
    # Into the image folder itself, even with --overwrite: nothing written or deleted.
    before = sorted(p.name for p in pathlib.Path(image_folder).rglob("*"))
    _one_error_line(_run("prepare_lmdb.py", image_folder, image_folder, "--overwrite"),
                    f"{image_folder} holds other files too (cat, dog, eel)", "nothing was deleted")
    assert sorted(p.name for p in pathlib.Path(image_folder).rglob("*")) == before
    # A resume from a folder that changed since.
    out = str(tmp_path / "train.lmdb")
    write_lmdb(FolderDataset(image_folder), out, max_new=4, progress=False)
    other = make_folder(str(tmp_path / "other"), ["ant", "bee"], 2, seed=1)
    _one_error_line(_run("prepare_lmdb.py", other, out, "--no-progress"),
                    f"LMDB {out} was written from a different image list than {other}")


def test_export_fashion_mnist_refuses_an_output_with_files(tmp_path):
    out = tmp_path / "fm"
    (out / "train" / "old").mkdir(parents=True)
    (out / "train" / "old" / "a.png").write_bytes(b"x")
    _one_error_line(_run("export_fashion_mnist.py", str(out), "--train-per-class", "1"),
                    f"{out / 'train'} already holds 1 file, which would stay")
    assert not (out / "test").exists()  # refused before writing anything
