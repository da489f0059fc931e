#!/usr/bin/env bash
# One-time (and idempotent) set-up of the project environment in .venv at the repository root.
#   scripts/setup.sh              # CPU or CUDA picked by whether nvidia-smi works
#   scripts/setup.sh --dry-run    # change nothing: print what would be removed and installed (pip --dry-run)
# A second run only checks: nothing is reinstalled unless setup.cfg, setup.py or this script changed.
# Environment: SETUP_FLAVOR=cpu|cuda overrides the nvidia-smi test; SETUP_VENV another venv folder;
# TORCH_INDEX_URL the index CUDA torch comes from (default: pip's own index, whose Linux torch wheels are
# CUDA builds; e.g. https://download.pytorch.org/whl/cu126 for a CUDA 12.6 build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SETUP_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
WAYMO_PKG="waymo-open-dataset-tf-2-12-0==1.6.7"
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg (--dry-run, --help)" >&2; exit 2 ;;
  esac
done

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
  if [ "$DRY_RUN" = 1 ]; then
    log "would install Debian packages: ${need_debs[*]}"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${need_debs[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
  else
    log "WARNING: missing system packages: ${need_debs[*]}"
    log "         install them with: sudo apt-get install ${need_debs[*]}"
  fi
fi

# --- CPU or CUDA
if [ -n "${SETUP_FLAVOR:-}" ]; then
  case "$SETUP_FLAVOR" in cpu|cuda) FLAVOR="$SETUP_FLAVOR" ;;
    *) echo "setup.sh: SETUP_FLAVOR=$SETUP_FLAVOR: expected cpu or cuda" >&2; exit 2 ;; esac
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  FLAVOR=cuda
else
  FLAVOR=cpu
fi
# The distributions of each flavour, and those of the other one that share their package folders
# (spconv/, cumm/, open3d/): installed over each other they mix files, so the other flavour's go first.
if [ "$FLAVOR" = cuda ]; then
  OTHER_FLAVOR_DISTS="spconv cumm open3d-cpu"
else
  OTHER_FLAVOR_DISTS="spconv-cu118 spconv-cu120 spconv-cu121 spconv-cu124 spconv-cu126 cumm-cu118 cumm-cu120 cumm-cu121 cumm-cu124 cumm-cu126 open3d"
fi
log "flavour: $FLAVOR"

# --- venv
if [ ! -x "$VENV/bin/python" ]; then
  if [ "$DRY_RUN" = 1 ]; then
    log "would create $VENV (the plan below is resolved with $PY)"
  else
    log "creating $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
fi
VPY="$VENV/bin/python"
[ -x "$VPY" ] || VPY="$(command -v "$PY")"
PIP=("$VPY" -m pip install -q --disable-pip-version-check)
REPORT_DIR=""
if [ "$DRY_RUN" = 1 ]; then
  REPORT_DIR="$(mktemp -d)"
  trap 'rm -rf "$REPORT_DIR"' EXIT
fi

# pip install, or in a dry run pip's own --dry-run, summarised as "would install NAME VERSION" lines.
pip_install() {
  if [ "$DRY_RUN" = 0 ]; then
    "${PIP[@]}" "$@"
    return
  fi
  local report="$REPORT_DIR/report.json"
  "${PIP[@]}" --dry-run --report "$report" "$@"
  "$VPY" - "$report" <<'EOF'
import json, sys
for item in json.load(open(sys.argv[1])).get("install", []):
    meta = item["metadata"]
    print(f"[setup] would install {meta['name']} {meta['version']}")
EOF
}

# The other flavour's distributions that are installed, removed before this flavour's go in.
remove_other_flavor() {
  local installed=() d
  for d in $OTHER_FLAVOR_DISTS; do
    "$VPY" -c "import importlib.metadata as m, sys; m.distribution(sys.argv[1])" "$d" 2>/dev/null && installed+=("$d")
  done
  [ ${#installed[@]} -gt 0 ] || return 0
  if [ "$DRY_RUN" = 1 ]; then
    log "would uninstall ${installed[*]} (the CPU/CUDA build this $FLAVOR machine does not use)"
  else
    log "uninstalling ${installed[*]} (the other flavour's builds, same package folders)"
    "$VPY" -m pip uninstall -y -q "${installed[@]}"
  fi
}

# torch of the wanted version and flavour: the local version label counts (2.13.0+cpu is not a CUDA build).
torch_ok() {
  "$VPY" - "$TORCH_VERSION" "$FLAVOR" 2>/dev/null <<'EOF'
import sys
import torch
want, flavor = sys.argv[1], sys.argv[2]
base = torch.__version__.split("+")[0]
is_cuda = torch.version.cuda is not None
sys.exit(0 if base == want and is_cuda == (flavor == "cuda") else 1)
EOF
}

# The compiled CPU sparse-convolution kernels (detector/ops/csrc, AVX2 + OpenMP, system C++ compiler),
# built once into detector/ops/_build/ under a name hashing the source: a current build is kept, a
# changed source is rebuilt. Without a compiler (or AVX2) the layers run their torch path and say so.
build_cpu_kernels() {
  # on a CUDA machine too: its CPU runs (tests, CPU evaluation) take the same layers as a CPU machine's
  if [ "$DRY_RUN" = 1 ]; then
    log "would build the compiled CPU sparse-convolution kernels (python -m detector.ops.cpu_kernels)"
    return 0
  fi
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
if [ "$DRY_RUN" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && torch_ok \
    && "$VPY" -c "import detector, torch, spconv, open3d, lightning, hydra" 2>/dev/null; then
  build_cpu_kernels
  log "environment up to date ($FLAVOR): $VENV"
  exit 0
fi

# --- the other flavour's spconv/cumm/open3d (and torch) out first: they share package folders
remove_other_flavor

# --- torch first and explicitly: any other request may pull a multi-GB build.
if ! torch_ok; then
  if "$VPY" -c "import torch" 2>/dev/null; then
    if [ "$DRY_RUN" = 1 ]; then
      log "would uninstall torch $("$VPY" -c 'import torch; print(torch.__version__)') (not the $FLAVOR build of $TORCH_VERSION)"
    else
      "$VPY" -m pip uninstall -y -q torch  # 2.13.0+cpu satisfies ==2.13.0: pip would keep it
    fi
  fi
  log "installing torch==$TORCH_VERSION ($FLAVOR)"
  DRY_IGNORE=()  # a dry run resolves torch as if the build it would uninstall were gone
  [ "$DRY_RUN" = 0 ] || DRY_IGNORE=(--ignore-installed)
  if [ "$FLAVOR" = cuda ]; then
    # without the configured find-links and extra indexes, where CPU builds (2.13.0+cpu) lie and win
    # over the CUDA one by their local version label; from TORCH_INDEX_URL if set
    ( unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL; export PIP_CONFIG_FILE=/dev/null
      pip_install ${DRY_IGNORE[@]+"${DRY_IGNORE[@]}"} ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==$TORCH_VERSION" )
  else
    pip_install ${DRY_IGNORE[@]+"${DRY_IGNORE[@]}"} "torch==$TORCH_VERSION"
  fi
fi

# --- the project, its dependencies and the flavour's spconv/open3d
log "installing the project ($FLAVOR extras)"
pip_install -e "$ROOT[$FLAVOR,dev]"

# --- Waymo protos without their TensorFlow pins
if ! "$VPY" -c "from waymo_open_dataset import dataset_pb2" 2>/dev/null; then
  log "installing $WAYMO_PKG (protos only, --no-deps)"
  pip_install --no-deps "$WAYMO_PKG"
fi

if [ "$DRY_RUN" = 1 ]; then
  build_cpu_kernels
  log "dry run ($FLAVOR): nothing was changed"
  exit 0
fi

"$VPY" -c "import detector, torch, spconv, open3d, lightning, hydra, pyarrow; from waymo_open_dataset import dataset_pb2, label_pb2; from waymo_open_dataset.protos import metrics_pb2" 
build_cpu_kernels
echo "$want" > "$STAMP"
log "done ($FLAVOR): activate with 'source $VENV/bin/activate'"
