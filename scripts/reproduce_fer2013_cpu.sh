#!/usr/bin/env bash
# FER2013 on a CPU budget: a baseline-CNN classifier and a triplet model with the same backbone,
# trained on Training, selected and reported on PublicTest (val). Usage:
#   bash scripts/reproduce_fer2013_cpu.sh path/to/fer2013.csv.gz [OUT_DIR] [MINUTES_PER_MODEL]
set -euo pipefail
DATA=${1:?path to fer2013.csv(.gz)}
OUT=${2:-runs/fer2013-cpu}
MIN=${3:-14}
COMMON=(--model baseline --data "$DATA" --epochs 4 --set model.width=32 --set optim.name=adamw
        --set optim.lr=0.003 --set optim.weight_decay=0.0005 --set "train.time_budget_minutes=$MIN")
fermetric -q train-classifier "${COMMON[@]}" --set train.label_smoothing=0.1 --out "$OUT/classifier"
fermetric -q train-triplet "${COMMON[@]}" --set metric.m_per_class=16 --out "$OUT/triplet"
fermetric -q evaluate "$OUT/classifier" --split val --tta
for run in classifier triplet; do fermetric -q knn-eval "$OUT/$run" --split val; done
fermetric -q ensemble "$OUT/classifier" "$OUT/triplet" --split val --out "$OUT/ensemble"
fermetric -q report "$OUT/classifier" "$OUT/triplet" --extra "$OUT/ensemble" --out "$OUT/report.html"
