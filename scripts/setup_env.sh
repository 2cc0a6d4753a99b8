#!/usr/bin/env bash
# Builds (or checks) the project's virtual environment: torch/torchvision pinned, Detectron2 0.6
# from the pb1-detectron2 sdist patched to pure Python, the rest from PyPI, slimdet in editable
# mode, the embedded Fashion-MNIST data set from Debian's packages, and the tiny COCO set of the
# detection tests and demo (datasets/prepare_tiny_coco.py: labelme's sdist from PyPI, cached).
#
# Idempotent: when the venv already matches the inputs (hash of the files below), it only
# re-checks imports and data and returns in a few seconds.
#
# Env: SLIMDET_VENV (default .venv), PYTHON (default python3.11), SLIMDET_SKIP_DATA=1 to skip both
# data sets, DETECTRON2_DATASETS (default datasets/) where the tiny COCO set goes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${SLIMDET_VENV:-$ROOT/.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
STAMP="$VENV/.slimdet-setup"
D2_SDIST=pb1-detectron2-0.6.tar.gz
D2_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29
FMNIST_DIR=/usr/share/datasets/fashion-mnist

log() { echo "[setup] $*"; }

inputs_hash() {
  cat constraints.txt requirements.txt requirements-dev.txt setup.py \
      scripts/setup_env.sh scripts/patch_detectron2.py | sha256sum | cut -d' ' -f1
}

ensure_data() {
  [ "${SLIMDET_SKIP_DATA:-0}" = 1 ] && return 0
  if [ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ]; then return 0; fi
  log "installing Debian package dataset-fashion-mnist (the embedded demo data set)"
  local SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  if ! command -v apt-get >/dev/null; then
    log "WARNING: no apt-get; install Fashion-MNIST IDX files under $FMNIST_DIR or set SLIMDET_FMNIST_DIR"
    return 0
  fi
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }
  [ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] || { log "ERROR: $FMNIST_DIR still missing"; exit 1; }
}

# Built once; an existing set is kept. Offline, the script writes generated shapes and says so
# (the detection tests still run; the real-photo test skips): set-up does not fail for it.
ensure_tiny_coco() {
  [ "${SLIMDET_SKIP_DATA:-0}" = 1 ] && return 0
  local dir="${DETECTRON2_DATASETS:-datasets}/tiny_coco"
  if [ -f "$dir/annotations/instances_train.json" ] && [ -f "$dir/annotations/instances_val.json" ] \
     && [ -f "$dir/SOURCE.txt" ]; then
    if grep -q "^GENERATED" "$dir/SOURCE.txt"; then
      log "NOTE: $dir holds generated shapes (built offline); python datasets/prepare_tiny_coco.py --force fetches the real photos"
    fi
    return 0
  fi
  log "building the tiny COCO set in $dir (datasets/prepare_tiny_coco.py)"
  "$VENV/bin/python" datasets/prepare_tiny_coco.py \
    || log "WARNING: the tiny COCO set was not built; the detection tests need it (rerun python datasets/prepare_tiny_coco.py)"
}

want=$(inputs_hash)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$VENV/bin/python" -c "import slimdet, detectron2, torch" 2>/dev/null; then
  ensure_data
  ensure_tiny_coco
  log "environment $VENV is current"
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
export PIP_CONSTRAINT="$ROOT/constraints.txt"
"${PIP[@]}" install -U "setuptools<81" wheel 2>&1 | grep -v "^WARNING: Location" || true
log "installing torch, torchvision and the Python dependencies"
"${PIP[@]}" install -r requirements.txt -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import torch, torchvision, fvcore, iopath" \
  || { log "ERROR: dependency install failed"; exit 1; }

if ! "$VENV/bin/python" -c "import detectron2, detectron2.modeling, detectron2.model_zoo as mz; mz.get_config_file('Base-RCNN-FPN.yaml')" 2>/dev/null; then
  log "installing Detectron2 0.6 (pb1-detectron2 sdist, patched to pure Python)"
  CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/slimdet
  mkdir -p "$CACHE"
  if [ ! -f "$CACHE/$D2_SDIST" ] || ! echo "$D2_SHA256  $CACHE/$D2_SDIST" | sha256sum -c --quiet - 2>/dev/null; then
    rm -f "$CACHE/$D2_SDIST"
    # --no-build-isolation: its setup.py imports torch, which the venv has.
    "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$CACHE" \
      pb1-detectron2==0.6 2>&1 | grep -v "^WARNING: Location" || true
  fi
  echo "$D2_SHA256  $CACHE/$D2_SDIST" | sha256sum -c --quiet - \
    || { log "ERROR: $CACHE/$D2_SDIST missing or sha256 mismatch"; exit 1; }
  BUILD=$(mktemp -d)
  trap 'rm -rf "$BUILD"' EXIT
  tar xzf "$CACHE/$D2_SDIST" -C "$BUILD"
  "$VENV/bin/python" scripts/patch_detectron2.py "$BUILD/pb1-detectron2-0.6"
  "${PIP[@]}" install --no-deps --no-build-isolation "$BUILD/pb1-detectron2-0.6" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import detectron2.modeling, detectron2.model_zoo as mz; mz.get_config_file('Base-RCNN-FPN.yaml')" \
    || { log "ERROR: detectron2 install failed"; exit 1; }
fi

log "installing slimdet (editable)"
"${PIP[@]}" install --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import slimdet" || { log "ERROR: slimdet does not import"; exit 1; }
ensure_data
ensure_tiny_coco
echo "$want" > "$STAMP"
log "environment ready in $(( $(date +%s) - start )) s: $VENV"
