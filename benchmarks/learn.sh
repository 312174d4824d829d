#!/usr/bin/env bash
# "It learns": base model vs. DAPO-trained checkpoints on two held-out splits, over seeds. A thin wrapper of
# benchmarks/learn.py (its --help and benchmarks/README.md say what it runs and prints); arguments pass through:
#
#   bash benchmarks/learn.sh                          # seeds 0 1 2, train.max_minutes=10, the default recipe
#   bash benchmarks/learn.sh --seeds 0 --minutes 2    # MINUTES=2 bash benchmarks/learn.sh works too
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python benchmarks/learn.py ${MINUTES:+--minutes "$MINUTES"} "$@"
