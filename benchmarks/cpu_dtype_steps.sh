#!/usr/bin/env bash
# SFT and GRPO step times on CPU, float32 against bf16 autocast, the same work one after the
# other in one run (the recipes' seeds give both dtypes the same batches and prompts). bf16 is
# fast only on CPUs with native bf16 matmuls (AMX or AVX512-BF16; `lscpu | grep -o amx_bf16`).
# recipes/cpu-grpo.yaml starts from runs/cpu-sft/final: run `smolgrpo sft --config
# recipes/cpu-sft.yaml` first.
# Usage: SMOLGRPO_DATA_DIR=../shared/data/gsm8k bash benchmarks/cpu_dtype_steps.sh [SFT_STEPS] [GRPO_STEPS]
set -euo pipefail
sft_steps=${1:-3}
grpo_steps=${2:-2}
mkdir -p runs/logs
run() {  # run STAGE COMMAND RECIPE STEPS: both dtypes, one after the other
  for dtype in float32 bfloat16; do
    smolgrpo "$2" --config "recipes/$3.yaml" --set model.dtype=$dtype \
      --set optim.max_steps="$4" --set run.save_every=1000 \
      --set run.output_dir="runs/dtype-$1-$dtype" --overwrite --no-progress \
      > "runs/logs/dtype-$1-$dtype.log" 2>&1
  done
}
run sft sft cpu-sft "$sft_steps"
run grpo train cpu-grpo "$grpo_steps"
python - <<'PY'
import json
for stage in ("sft", "grpo"):
    for dtype in ("float32", "bfloat16"):
        rows = [json.loads(line) for line in open(f"runs/dtype-{stage}-{dtype}/metrics.jsonl")]
        times = [round(row["step_time_s"], 1) for row in rows]
        lengths = [round(row.get("completion_length_mean", 0)) for row in rows]
        extra = f", completion tokens {lengths}" if stage == "grpo" else ""
        print(f"{stage} {dtype:9s} step times (s) {times}, total {sum(times):.1f}{extra}")
PY
