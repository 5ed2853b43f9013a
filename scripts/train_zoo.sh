#!/usr/bin/env bash
# Retrain the zoo's FER2013 classifier and write it into fermetric/zoo/models/fer2013-baseline.
# Resumable: rerun the same command after an interruption and training continues from last.pt.
#   bash scripts/train_zoo.sh path/to/fer2013.csv[.gz] [OUT_DIR] [THREADS]
set -euo pipefail
DATA=${1:?path to fer2013.csv(.gz)}
OUT=${2:-runs/zoo}
THREADS=${3:-0}
RUN="$OUT/fer2013-baseline"
RESUME=()
[ -f "$RUN/checkpoints/last.pt" ] && RESUME=(--resume)
if [ ! -f "$RUN/metrics.json" ]; then  # metrics.json is written when the training has finished
    fermetric --threads "$THREADS" train-classifier --config configs/zoo/fer2013-baseline.yaml --data "$DATA" \
        --out "$RUN" "${RESUME[@]}"
fi
python scripts/export_zoo.py "$RUN" fer2013-baseline --recipe configs/zoo/fer2013-baseline.yaml \
    --description "Baseline CNN (width 32) trained by fermetric on FER2013 Training, selected on PublicTest" \
    --retrain "bash scripts/train_zoo.sh fer2013.csv"
