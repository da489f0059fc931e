#!/usr/bin/env bash
# Fetch here (where a package index is reachable) the wheels that scripts/gpu_check.sh needs on a lent GPU
# machine (Python 3.12, CUDA torch, Lightning and pyarrow there; no spconv, cumm, Hydra or Waymo protos),
# and pack them into carry folders of at most ~60 MiB each (the device tool carries 64 MiB a call):
#   scripts/gpu_wheels.sh            # -> .whl/1, .whl/2 (git-ignored); spconv's 70 MB wheel in two parts
# Then, on the device, call 1 carries .whl/1, call 2 (same warm machine) carries .whl/2 and runs
#   scripts/gpu_check.sh --wheels .whl      (docs/studies/gpu_path.md, "Running it on a lent GPU").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
DEST="$ROOT/.whl"
ALL="$DEST/all"
mkdir -p "$ALL"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
# binary wheels for CPython 3.12 (the device's), no dependencies: each one is named
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d "$ALL" spconv-cu126==2.3.8 cumm-cu126==0.7.11 pccm==0.4.16 ccimport==0.4.4 fire==0.7.1 lark==1.3.1 \
  hydra-core==1.3.8 omegaconf==2.3.1 google-crc32c==1.9.0
# pure-Python projects published as source only: built into a wheel here
"$PY" -m pip wheel -q --no-deps -w "$ALL" antlr4-python3-runtime==4.9.3
# the Waymo protos (a py3 wheel; installed --no-deps: no TensorFlow)
"$PY" -m pip download -q --no-deps -d "$ALL" waymo-open-dataset-tf-2-12-0==1.6.7
rm -rf "$DEST/1" "$DEST/2"
mkdir -p "$DEST/1" "$DEST/2"
big="$(ls "$ALL"/spconv_cu126-*.whl)"
split -b 40M -d "$big" "$DEST/part-$(basename "$big")."
mv "$DEST/part-$(basename "$big").00" "$DEST/1/"
mv "$DEST/part-$(basename "$big").01" "$DEST/2/"
for w in "$ALL"/*.whl; do
  [ "$w" = "$big" ] && continue
  case "$(basename "$w")" in cumm*) cp "$w" "$DEST/2/" ;; *) cp "$w" "$DEST/1/" ;; esac
done
du -sh "$DEST/1" "$DEST/2"
