#!/usr/bin/env bash
# One-time (and idempotent) set-up of the project environment in .venv at the repository root.
#   scripts/setup.sh            # CPU or CUDA picked by whether nvidia-smi works
# A second run only checks: nothing is reinstalled unless setup.cfg, setup.py or this script changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
WAYMO_PKG="waymo-open-dataset-tf-2-12-0==1.6.7"

log() { echo "[setup] $*"; }

# --- Debian packages: open3d import needs libusb; headless rendering needs a Vulkan loader + Mesa;
#     the viewer window's tests and benchmark run it on a virtual display (Xvfb, xwd, xdotool).
need_debs=()
have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if command -v dpkg-query >/dev/null 2>&1; then
  for p in libusb-1.0-0 libvulkan1 mesa-vulkan-drivers libegl1 libgl1 libgomp1 xvfb x11-apps xdotool; do
    have_deb "$p" || need_debs+=("$p")
  done
fi
if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${need_debs[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
  else
    log "WARNING: missing system packages: ${need_debs[*]}"
    log "         install them with: sudo apt-get install ${need_debs[*]}"
  fi
fi

# --- CPU or CUDA
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  FLAVOR=cuda
else
  FLAVOR=cpu
fi

# --- venv
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install -q --disable-pip-version-check)

# The compiled CPU sparse-convolution kernels (detector/ops/csrc, AVX2 + OpenMP, system C++ compiler),
# built once into detector/ops/_build/ under a name hashing the source: a current build is kept, a
# changed source is rebuilt. Without a compiler (or AVX2) the layers run their torch path and say so.
build_cpu_kernels() {
  [ "$FLAVOR" = cpu ] || return 0  # on CUDA the layers are spconv's own
  if ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
    log "WARNING: no C++ compiler: CPU sparse convolution will use its slower torch path"
    log "         (install g++, then re-run scripts/setup.sh)"
    return 0
  fi
  "$VPY" -c 'import sys; from detector.ops import cpu_kernels; sys.exit(cpu_kernels.main())' \
    || log "WARNING: CPU kernels not built; CPU sparse convolution will use its slower torch path"
}

# Stamp: hash of what decides the install; equal stamp -> nothing to do.
STAMP="$VENV/.setup-stamp"
want="$(cat "$ROOT/setup.cfg" "$ROOT/setup.py" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)-$FLAVOR"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VPY" -c "import detector, torch, spconv, open3d, lightning, hydra" 2>/dev/null; then
  build_cpu_kernels
  log "environment up to date ($FLAVOR): $VENV"
  exit 0
fi

# --- torch first and explicitly: any other request may pull a multi-GB build.
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION ($FLAVOR)"
  "${PIP[@]}" "torch==$TORCH_VERSION"
fi

# --- the project, its dependencies and the flavour's spconv/open3d
log "installing the project ($FLAVOR extras)"
"${PIP[@]}" -e "$ROOT[$FLAVOR,dev]"

# --- Waymo protos without their TensorFlow pins
if ! "$VPY" -c "from waymo_open_dataset import dataset_pb2" 2>/dev/null; then
  log "installing $WAYMO_PKG (protos only, --no-deps)"
  "${PIP[@]}" --no-deps "$WAYMO_PKG"
fi

"$VPY" -c "import detector, torch, spconv, open3d, lightning, hydra, pyarrow; from waymo_open_dataset import dataset_pb2, label_pb2; from waymo_open_dataset.protos import metrics_pb2" 
build_cpu_kernels
echo "$want" > "$STAMP"
log "done ($FLAVOR): activate with 'source $VENV/bin/activate'"
