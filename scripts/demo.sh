#!/usr/bin/env bash
# Set up (if needed) and run the MarketMood demo on the embedded broker and database.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec marketmood demo "$@"
