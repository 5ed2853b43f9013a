#!/usr/bin/env bash
# Retrain the zoo's FER2013 models and write them into fermetric/zoo/models/:
#   fer2013-baseline  the classifier (configs/zoo/fer2013-baseline.yaml)
#   fer2013-triplet   the embedding model, warm-started from that classifier (configs/zoo/fer2013-triplet.yaml)
# Resumable: rerun the same command after an interruption and training continues from last.pt;
# a finished run (its metrics.json exists) is not trained again.
#   bash scripts/train_zoo.sh path/to/fer2013.csv[.gz] [OUT_DIR] [THREADS]
set -euo pipefail
DATA=${1:?path to fer2013.csv(.gz)}
OUT=${2:-runs/zoo}
THREADS=${3:-0}
RETRAIN="bash scripts/train_zoo.sh fer2013.csv"

train() {  # train COMMAND RUN [ARGS...]: train (or resume) RUN unless it has finished
    local command=$1 run=$2
    shift 2
    local resume=()
    [ -f "$run/checkpoints/last.pt" ] && resume=(--resume)
    if [ ! -f "$run/metrics.json" ]; then  # metrics.json is written when the training has finished
        fermetric --threads "$THREADS" "$command" --data "$DATA" --out "$run" "${resume[@]}" "$@"
    fi
}

CLASSIFIER="$OUT/fer2013-baseline"
train train-classifier "$CLASSIFIER" --config configs/zoo/fer2013-baseline.yaml
python scripts/export_zoo.py "$CLASSIFIER" fer2013-baseline --recipe configs/zoo/fer2013-baseline.yaml \
    --description "Baseline CNN (width 32) trained by fermetric on FER2013 Training, selected on PublicTest" \
    --retrain "$RETRAIN"

TRIPLET="$OUT/fer2013-triplet"
train train-triplet "$TRIPLET" --config configs/zoo/fer2013-triplet.yaml --init-from "$CLASSIFIER"
python scripts/export_zoo.py "$TRIPLET" fer2013-triplet --recipe configs/zoo/fer2013-triplet.yaml \
    --description "Triplet + cross-entropy embedding model (width 32, 64-d) warm-started from fer2013-baseline, kNN over the FER2013 Training gallery, selected on PublicTest" \
    --retrain "$RETRAIN"
