#!/usr/bin/env bash
# Packs what benchmarks/bench_cuda.py needs on a bare GPU host that cannot reach a package index or ../shared,
# inside the device tool's 64 MiB transfer limit (README of the tool library: device):
#   .whl/     cp312 wheels of the few pure-Python dependencies the GPU image lacks (pydantic, structlog, ...)
#   .devrun/  the labeled datasets, the base encoder in fp16 (45 MB instead of 91; .devrun/fp32.py upcasts it
#             there, so training starts from fp32 weights rounded once to fp16), the teacher's config.json
#             (architecture timing only) and, when given, a teacher soft-label cache for the KD recipe.
# The bundled model's int8 ONNX (22 MB) does not fit beside them: the device command below does not need it,
# so it is untracked for the call (`git rm --cached`, excluded) and restored afterwards (`git reset`).
#
#   bash benchmarks/prepare_device_run.sh [DATA_DIR] [SOFT_LABELS.npz] [TEACHER_CONFIG.json]
#
# Then one device call (see BENCHMARKS.md, "The CUDA paths"):
#   pip install --target /tmp/site .whl/*.whl; python3 .devrun/fp32.py .devrun/base16 /tmp/base;
#   python3 benchmarks/bench_cuda.py --data .devrun/data --work /tmp/w --out $OUT/cuda.json --base-encoder /tmp/base
#       [--soft-labels .devrun/soft.npz] --arch-config .devrun/teacher_config.json --arch-config .devrun/base16/config.json
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
SOFT=${2:-}
TEACHER_CONFIG=${3:-}
PY=.venv/bin/python

grep -qx "/.devrun/" .git/info/exclude 2>/dev/null || echo "/.devrun/" >> .git/info/exclude
rm -rf .whl .devrun && mkdir -p .devrun/data .devrun/base16
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "pydantic==$($PY -c 'import pydantic; print(pydantic.VERSION)')" \
  "pydantic_core==$($PY -c 'import pydantic_core; print(pydantic_core.__version__)')" \
  annotated-types typing-inspection structlog emoji ftfy wcwidth typing_extensions

for d in financial_phrasebank fiqa_2018_task1 twitter_financial_news_sentiment twitter_financial_news_topic; do
  cp -r "$DATA/$d" .devrun/data/
done

BASE=$($PY -c 'from models.network import default_base_encoder; print(default_base_encoder())')
(cd "$BASE" && cp -r 1_Pooling config.json modules.json sentence_bert_config.json special_tokens_map.json \
  tokenizer.json tokenizer_config.json vocab.txt "$OLDPWD/.devrun/base16/")
$PY - "$BASE/model.safetensors" .devrun/base16/model.fp16.safetensors <<'EOF'
import sys
from safetensors.torch import load_file, save_file
state = load_file(sys.argv[1])
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, sys.argv[2])
EOF
cat > .devrun/fp32.py <<'EOF'
"""Transport only: the base encoder travels in fp16 (64 MiB limit); training starts from its fp32 upcast."""
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.fp16.safetensors"))
state = load_file(str(src / "model.fp16.safetensors"))
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, str(dst / "model.safetensors"))
EOF
[ -n "$SOFT" ] && cp "$SOFT" .devrun/soft.npz
[ -n "$TEACHER_CONFIG" ] && cp "$TEACHER_CONFIG" .devrun/teacher_config.json
du -sh .whl .devrun
