#!/usr/bin/env bash
# The main job, one command on a fresh machine: set-up, synthetic Waymo segments, conversion to the
# frame store, training of the LSTM detector, evaluation with the Waymo metrics, a rendered picture.
#   scripts/demo.sh                 # everything under work/demo/ (re-running reuses data already made)
#   DEMO_DIR=/tmp/demo scripts/demo.sh
#   scripts/demo.sh trainer.max_epochs=2   # extra Hydra overrides go to the training command
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO_DIR="${DEMO_DIR:-$ROOT/work/demo}"
PY="$ROOT/.venv/bin/python"
start=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }

step "set-up"
"$ROOT/scripts/setup.sh"

step "synthesize Waymo-format segments -> $DEMO_DIR/records"
SEGMENTS="${DEMO_SEGMENTS:-28}"
# the stamp names the synthesizer's version too: records (and their store) of an older generator or
# another segment count are made again, not converted into a store that mixes the two
STAMP="$DEMO_DIR/records/.done${SEGMENTS}_g$("$PY" -c 'from data_tools.synth_segment import GENERATOR; print(GENERATOR)')"
if [ ! -f "$STAMP" ]; then
  rm -rf "$DEMO_DIR/records" "$DEMO_DIR/store"
  # many training scenes seen twice each, not a few seen many times: a model that holds on scenes it
  # never saw (docs/studies/demo-history.md)
  "$PY" -m data_tools.synthesize out_dir="$DEMO_DIR/records" segments="$SEGMENTS" val_segments=2 seed=0 \
    hydra.run.dir="$DEMO_DIR/logs/synthesize"
  touch "$STAMP"
fi

step "convert records -> frame store $DEMO_DIR/store"
"$PY" -m data_tools.convert_waymo src="$DEMO_DIR/records" dst="$DEMO_DIR/store" workers=2 \
  hydra.run.dir="$DEMO_DIR/logs/convert"
"$PY" -m data_tools.stats dst="$DEMO_DIR/store" hydra.run.dir="$DEMO_DIR/logs/stats"

step "train experiment=demo_synthetic"
TRAIN_DIR="$DEMO_DIR/train"
rm -rf "$TRAIN_DIR"
# no validation inside the training: the next step evaluates the same split (and writes predictions.bin)
"$PY" -m detector.train experiment=demo_synthetic data.root="$DEMO_DIR/store" hydra.run.dir="$TRAIN_DIR" \
  trainer.limit_val_batches=0 module.validation_metrics=false checkpoint.monitor=null "$@"
CKPT="$TRAIN_DIR/checkpoints/last.ckpt"

step "evaluate on the validation split"
EVAL_DIR="$DEMO_DIR/evaluate"
rm -rf "$EVAL_DIR"
"$PY" -m detector.evaluate experiment=demo_synthetic data.root="$DEMO_DIR/store" ckpt_path="$CKPT" \
  split=validation hydra.run.dir="$EVAL_DIR"

step "render detections"
SEG="$(ls -d "$DEMO_DIR"/store/validation/*/ | head -n 1)"
"$PY" -m detector.visualize input="$SEG" predictions="$EVAL_DIR/predictions.bin" frame=20 \
  headless=true score_threshold=0.3 out="$DEMO_DIR/detections.png" width=960 height=720
"$PY" -m detector.visualize input="$SEG" predictions="$EVAL_DIR/predictions.bin" frame=20 \
  headless=true renderer=matplotlib score_threshold=0.3 out="$DEMO_DIR/detections_bev.png"

step "done in $(( $(date +%s) - start ))s"
cat <<TXT
records:          $DEMO_DIR/records
frame store:      $DEMO_DIR/store
training run:     $TRAIN_DIR  (checkpoints/, logs/, learning_curves.png)
evaluation:       $EVAL_DIR  (predictions.bin, ground_truth.bin, metrics.json)
pictures:         $DEMO_DIR/detections.png, $DEMO_DIR/detections_bev.png
TXT
