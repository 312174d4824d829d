#!/usr/bin/env bash
# "It learns": held-out results of the embedded model before and after a <= 10-minute DAPO run on this CPU.
#
#   bash benchmarks/learn.sh            # about 10 min of training plus two greedy evaluations of data/test.jsonl
#
# Prints the before and after JSON summaries of `dapo-nb eval` (greedy pass@1 = correct final answers,
# format@1 = replies with a parseable "Answer:" line) and the training run's last metrics line.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin/dapo-nb
RUN=${RUN:-learn}
OUT=benchmarks/results/$RUN
rm -rf "$OUT" "checkpoints/$RUN"
mkdir -p "$OUT"
COMMON=(sampling.max_new_tokens=64 eval.num_samples=0 train.seed=0 reward.overlong_buffer_len=32)
# 4 prompts x G=8 per step, two AdamW updates; correctness + answer format + DAPO's soft overlong punishment
# (completions past 32 of the 64 tokens lose up to 1). Groups are filtered on the whole score, so groups whose
# answers are all wrong but differ in format or length still teach (the default, correctness, needs right answers).
TRAIN=(train.run_name="$RUN" train.output_dir="$OUT" train.max_minutes=${MINUTES:-10} train.total_steps=200
       train.save_every=0 ppo.batch_size=4 ppo.mini_batch_size=2 dapo.group_size=8 dapo.filter_metric=score
       dapo.max_gen_batches=2 ppo.learning_rate=3e-5 "reward.weights={correctness: 1.0, format: 1.0, overlong: 1.0}")

$BIN eval "${COMMON[@]}" | tail -n 1 | tee "$OUT/before.json"
start=$(date +%s)
$BIN train "${COMMON[@]}" "${TRAIN[@]}" > "$OUT/train.log" 2>&1
echo "training wall time: $(( $(date +%s) - start )) s (includes model loading and the final checkpoint)"
ckpt=$(ls -d checkpoints/"$RUN"/step-* | sort -t- -k2 -n | tail -n 1)
$BIN eval "${COMMON[@]}" model.pretrained_model_name_or_path="$ckpt" | tail -n 1 | tee "$OUT/after.json"
tail -n 1 "$OUT/metrics.jsonl"
