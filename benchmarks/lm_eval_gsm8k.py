"""Cross-check `smolgrpo eval` against the field's yardstick, EleutherAI's lm-evaluation-harness.

Both score the same model on the same GSM8K test problems with the same prompt (chat template,
smolgrpo's system prompt, no worked example, the assistant turn prefilled with `<reasoning>`),
greedy, the same token budget. lm-eval gets a task file written here that extracts the number in
the `<answer>` block with a regex and scores it with its `exact_match` (commas and `$` ignored).
The script then prints both accuracies with their 95% Wilson intervals and a per-problem
agreement table, and writes `lm_eval_crosscheck.json` and `.md` to --output-dir.

    pip install -r benchmarks/requirements-lm-eval.txt      # lm-eval; not a smolgrpo dependency
    python benchmarks/lm_eval_gsm8k.py --model runs/cpu-grpo/final \\
        --data ../shared/data/gsm8k --limit 200 --output-dir runs/lm-eval-cpu-grpo

Why the two can differ (each counted in the output):
- exact_match compares strings: `72.0` against `72` is a miss for lm-eval and a hit for
  smolgrpo's numeric `answers_match`;
- lm-eval generates with `transformers`' `generate` and left-pads batches, smolgrpo with its own
  decode loop; greedy decoding is the same in exact arithmetic, but float32 sums in another
  order can flip a near-tie between two tokens, after which the texts diverge;
- lm-eval's chat template path strips the prefill's trailing newline
  (`continue_final_message`), so its prompt ends in `<reasoning>` rather than `<reasoning>\\n`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TASK = "smolgrpo_gsm8k_answer_tag"
ANSWER_REGEX = r"<answer>\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*</answer>"


def task_yaml(test_file: Path, prefill: str, max_new_tokens: int) -> str:
    import yaml

    task = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(test_file)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{question}}",
        "doc_to_target": "{{answer.split('#### ')[-1]}}",
        "gen_prefix": prefill,
        "num_fewshot": 0,
        "generation_kwargs": {
            "until": ["<|im_end|>"],
            "do_sample": False,
            "temperature": 0.0,
            "max_gen_toks": max_new_tokens,
        },
        "filter_list": [
            {
                "name": "answer-tag",
                "filter": [
                    {"function": "regex", "regex_pattern": ANSWER_REGEX},
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "regexes_to_ignore": [",", "\\$"],
            }
        ],
        "metadata": {"version": 1.0},
    }
    return yaml.safe_dump(task, sort_keys=False)


def model_folder(name: str) -> str:
    if name == "embedded":
        from smolgrpo.models.loading import embedded_model_dir

        return str(embedded_model_dir())
    return name


def run_lm_eval(model: str, test_file: Path, args) -> tuple[dict, list[dict]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from smolgrpo.tasks.prompts import SYSTEM_PROMPT

    task_dir = Path(tempfile.mkdtemp(prefix="lm-eval-task-"))
    (task_dir / f"{TASK}.yaml").write_text(task_yaml(test_file, args.prefill, args.max_new_tokens))
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model},dtype=float32,device=cpu",
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir)),
        apply_chat_template=True,
        system_instruction=SYSTEM_PROMPT,
        limit=args.limit,
        batch_size=args.batch_size,
        log_samples=True,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
    )
    samples = results["samples"][TASK]
    return results["results"][TASK], sorted(samples, key=lambda s: s["doc_id"])


def run_smolgrpo(model: str, args) -> list[dict]:
    from smolgrpo.evaluation.evaluate import evaluate
    from smolgrpo.evaluation.settings import EvalSettings
    from smolgrpo.models.loading import load_model_and_tokenizer
    from smolgrpo.tasks.data import load_problems
    from smolgrpo.tasks.prompts import PromptTemplate

    problems = load_problems(args.data, "test", args.limit)
    loaded, tokenizer = load_model_and_tokenizer(model, "cpu", "float32")
    settings = EvalSettings(
        template=PromptTemplate(prefill=args.prefill, num_few_shot=0),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    _, records = evaluate(loaded, tokenizer, problems, settings, show_progress=True)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder, or 'embedded'")
    parser.add_argument("--data", required=True, help="folder with test.jsonl")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--prefill", default="<reasoning>\n")
    parser.add_argument("--output-dir", default="runs/lm-eval-crosscheck")
    args = parser.parse_args(argv)
    from smolgrpo.evaluation.evaluate import format_rate_with_interval, wilson_interval

    test_file = Path(args.data).resolve() / "test.jsonl"
    if not test_file.is_file():
        print(f"error: {test_file}: not found", file=sys.stderr)
        return 2
    model = model_folder(args.model)
    started = time.perf_counter()
    lm_metrics, lm_samples = run_lm_eval(model, test_file, args)
    lm_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours = run_smolgrpo(model, args)
    our_seconds = time.perf_counter() - started
    n = min(len(ours), len(lm_samples))
    lm_correct = [bool(s["exact_match"]) for s in lm_samples[:n]]
    our_correct = [bool(r["correct"]) for r in ours[:n]]
    same_text = sum(
        re.sub(r"\s+", " ", s["resps"][0][0]).strip()
        == re.sub(r"\s+", " ", r["completion"][len(args.prefill) :]).strip()
        for s, r in zip(lm_samples[:n], ours[:n])
    )
    table = {
        "both right": sum(a and b for a, b in zip(lm_correct, our_correct)),
        "only smolgrpo right": sum(b and not a for a, b in zip(lm_correct, our_correct)),
        "only lm-eval right": sum(a and not b for a, b in zip(lm_correct, our_correct)),
        "both wrong": sum(not a and not b for a, b in zip(lm_correct, our_correct)),
    }
    summary = {
        "model": args.model,
        "problems": n,
        "lm_eval_accuracy": sum(lm_correct) / n,
        "lm_eval_ci95": wilson_interval(sum(lm_correct), n),
        "smolgrpo_accuracy": sum(our_correct) / n,
        "smolgrpo_ci95": wilson_interval(sum(our_correct), n),
        "agreement": (table["both right"] + table["both wrong"]) / n,
        "identical_completions": same_text,
        "table": table,
        "lm_eval_metrics": {k: v for k, v in lm_metrics.items() if isinstance(v, int | float)},
        "seconds": {"lm_eval": round(lm_seconds, 1), "smolgrpo": round(our_seconds, 1)},
    }
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "lm_eval_crosscheck.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# lm-eval vs smolgrpo eval: {args.model}, first {n} GSM8K test problems",
        "",
        "| scorer | accuracy [95% CI] | time |",
        "| --- | --- | --- |",
        f"| lm-evaluation-harness (exact_match on `<answer>`) | "
        f"{format_rate_with_interval(summary['lm_eval_accuracy'], summary['lm_eval_ci95'])} | "
        f"{lm_seconds:.0f} s |",
        f"| smolgrpo eval (`answers_match` on `<answer>`) | "
        f"{format_rate_with_interval(summary['smolgrpo_accuracy'], summary['smolgrpo_ci95'])} | "
        f"{our_seconds:.0f} s |",
        "",
        f"Per problem: {table['both right']} both right, {table['only smolgrpo right']} only "
        f"smolgrpo, {table['only lm-eval right']} only lm-eval, {table['both wrong']} both wrong "
        f"(agreement {summary['agreement']:.1%}); {same_text} of {n} completions identical.",
    ]
    (output / "lm_eval_crosscheck.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
