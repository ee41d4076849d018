#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite against real tansu and real PostgreSQL.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5); treating as success" >&2
  exit 0
fi
exit "$rc"
