#!/usr/bin/env bash
# Retrain the zoo's FER2013 models and write them into fermetric/zoo/models/:
#   fer2013-baseline  the baseline CNN classifier (configs/zoo/fer2013-baseline.yaml)
#   fer2013-triplet   the embedding model, warm-started from that classifier (configs/zoo/fer2013-triplet.yaml)
#   fer2013-vgg16, fer2013-resnet18, fer2013-resnet50, fer2013-senet50
#                     the seeds' deep architectures (configs/zoo/fer2013-<arch>.yaml)
#   fer2013-ensemble  the soft vote of the entries above (configs/zoo/fer2013-ensemble.yaml; no training)
# An entry with configs/zoo/<name>.stage2.yaml (.stage3.yaml, ...) trains in stages: stage k warm-restarts
# from stage k-1's run (OUT/<name>, OUT/<name>-stage2, ...) into OUT/<name>-stage<k>; the last is exported.
# Resumable: rerun the same command after an interruption and training continues from last.pt;
# a finished run (its metrics.json exists) is not trained again. Trainings run one after another
# (two at once on two cores run slower than one after the other).
#   bash scripts/train_zoo.sh path/to/fer2013.csv[.gz] [OUT_DIR] [THREADS] [NAME ...]
# With NAMEs, only those entries (e.g. fer2013-resnet18 fer2013-ensemble); an entry's prerequisites
# (the triplet's classifier, the ensemble's members) must then be finished runs or shipped entries.
set -euo pipefail
DATA=${1:?path to fer2013.csv(.gz)}
OUT=${2:-runs/zoo}
THREADS=${3:-0}
shift $(( $# < 3 ? $# : 3 ))
WANT=("$@")
RETRAIN="bash scripts/train_zoo.sh fer2013.csv"
ALL=(fer2013-baseline fer2013-triplet fer2013-vgg16 fer2013-resnet18 fer2013-resnet50 fer2013-senet50 fer2013-ensemble)
[ ${#WANT[@]} -eq 0 ] && WANT=("${ALL[@]}")
for name in "${WANT[@]}"; do
    [[ " ${ALL[*]} " == *" $name "* ]] || { echo "error: unknown zoo entry $name; known: ${ALL[*]}" >&2; exit 2; }
done

wanted() { [[ " ${WANT[*]} " == *" $1 "* ]]; }

train() {  # train COMMAND RUN [ARGS...]: train (or resume) RUN unless it has finished
    local command=$1 run=$2
    shift 2
    local resume=()
    [ -f "$run/checkpoints/last.pt" ] && resume=(--resume)
    if [ ! -f "$run/metrics.json" ]; then  # metrics.json is written when the training has finished
        fermetric --threads "$THREADS" "$command" --data "$DATA" --out "$run" "${resume[@]}" "$@"
    fi
}

classifier() {  # classifier NAME DESCRIPTION: train configs/zoo/NAME.yaml and export it
    local name=$1 description=$2
    wanted "$name" || return 0
    train train-classifier "$OUT/$name" --config "configs/zoo/$name.yaml"
    local run="$OUT/$name" recipe="configs/zoo/$name.yaml" earlier=() k=2
    while [ -f "configs/zoo/$name.stage$k.yaml" ]; do
        # a staged recipe: each stage warm-restarts from the previous one's selected weights; the entry is the last
        train train-classifier "$OUT/$name-stage$k" --config "configs/zoo/$name.stage$k.yaml" --init-from "$run"
        earlier+=(--stage "$run")
        run="$OUT/$name-stage$k" recipe="$recipe, then configs/zoo/$name.stage$k.yaml"
        k=$((k + 1))
    done
    python scripts/export_zoo.py "$run" "$name" --recipe "$recipe" "${earlier[@]}" \
        --description "$description" --retrain "$RETRAIN"
}

classifier fer2013-baseline "Baseline CNN (width 32) trained by fermetric on FER2013 Training, selected on PublicTest"

if wanted fer2013-triplet; then
    # warm start from the classifier's run, else from the shipped entry
    init="$OUT/fer2013-baseline"
    [ -f "$init/metrics.json" ] || init=fer2013-baseline
    train train-triplet "$OUT/fer2013-triplet" --config configs/zoo/fer2013-triplet.yaml --init-from "$init"
    python scripts/export_zoo.py "$OUT/fer2013-triplet" fer2013-triplet --recipe configs/zoo/fer2013-triplet.yaml \
        --description "Triplet + cross-entropy embedding model (width 32) warm-started from fer2013-baseline; kNN over the FER2013 Training gallery embedded with the backbone's pre-logits; selected on PublicTest" \
        --retrain "$RETRAIN"
fi

classifier fer2013-vgg16 "VGG16 with batch norm (width 32) trained by fermetric on FER2013 Training, selected on PublicTest"
classifier fer2013-resnet18 "ResNet18, small stem (width 32) trained by fermetric on FER2013 Training, selected on PublicTest"
classifier fer2013-resnet50 "ResNet50, pool stem (width 32) trained by fermetric on FER2013 Training, selected on PublicTest"
classifier fer2013-senet50 "SE-ResNet50, pool stem (width 32) trained by fermetric on FER2013 Training, selected on PublicTest"

if wanted fer2013-ensemble; then
    python scripts/export_zoo.py --ensemble configs/zoo/fer2013-ensemble.yaml fer2013-ensemble --data "$DATA" \
        --retrain "$RETRAIN"
fi
