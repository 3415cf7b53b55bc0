#!/usr/bin/env bash
# The CPU chain at fixed step counts, for results that do not depend on the machine's speed:
# recipes/cpu-sft.yaml for SFT_STEPS steps, recipes/cpu-grpo.yaml from its final/ for GRPO_STEPS
# steps (both with their time limits off; the SFT cosine then ends at SFT_STEPS), then an eval
# on the test split. The data order (and sampling) follow SEED (run.seed).
#
#   SMOLGRPO_DATA_DIR=../shared/data/gsm8k bash analysis/chain_fixed_steps.sh SEED [OUT]
#
# OUT defaults to runs/chain-seed$SEED (sft/, grpo/, eval-1319/, or eval-N/ with EVAL_LIMIT=N).
# Environment overrides: SFT_STEPS (152) and GRPO_STEPS (25), the steps the reference 2-core
# machine reached in its hour; DTYPE (float32; bfloat16 on a CPU with bf16 units or a GPU);
# EVAL_LIMIT (0 = all 1,319);
# EXTRA (more --set flags for the GRPO stage, e.g. "--set grpo.scale_rewards=batch");
# SFT_MODEL (a finished SFT model's folder: skip the SFT stage and start GRPO from it, so that a
# GRPO ablation shares its SFT model with the chain it is compared with).
# Compare two finished chains problem by problem: smolgrpo compare OUT1/eval-1319 OUT2/eval-1319
set -euo pipefail
[ $# -ge 1 ] || { echo "error: usage: chain_fixed_steps.sh SEED [OUT]" >&2; exit 2; }
seed="$1"
out="${2:-runs/chain-seed$seed}"
sft_steps="${SFT_STEPS:-152}" grpo_steps="${GRPO_STEPS:-25}" dtype="${DTYPE:-float32}"
limit=() eval_dir="$out/eval-1319"
if [ "${EVAL_LIMIT:-0}" != 0 ]; then limit=(--limit "$EVAL_LIMIT") eval_dir="$out/eval-$EVAL_LIMIT"; fi
common=(--set "model.dtype=$dtype" --set "run.seed=$seed" --set run.time_limit_s=0)

sft_model="${SFT_MODEL:-$out/sft/final}"
if [ -z "${SFT_MODEL:-}" ]; then
  smolgrpo sft --config recipes/cpu-sft.yaml "${common[@]}" --set "optim.max_steps=$sft_steps" \
    --set "run.output_dir=$out/sft"
fi
# shellcheck disable=SC2086  # EXTRA is a list of flags
smolgrpo train --config recipes/cpu-grpo.yaml "${common[@]}" --set "optim.max_steps=$grpo_steps" \
  --set "model.name=$sft_model" --set "run.output_dir=$out/grpo" ${EXTRA:-}
smolgrpo eval --model "$out/grpo/final" --batch-size 64 "${limit[@]}" --output-dir "$eval_dir"
