"""Does the exported GGUF behave like the model in smolgrpo? Greedy decodes side by side.

    pip install -e ".[llama]"     # llama-cpp-python (builds llama.cpp from source)
    python benchmarks/gguf_agreement.py [--model embedded|RUN/final] [--limit-agree 50]
        [--limit-acc 200] [--outtypes f16,q8_0] [--out benchmarks/results/gguf_agreement.json]

The model (default: the embedded SmolLM2-135M-Instruct, loaded as smolgrpo loads it) is
exported once per weight type with `smolgrpo export`'s writer. Then, on the first GSM8K test
prompts, built as `smolgrpo eval` builds them (the model's system prompt, chat template and
prefill; its few-shot examples from the train split):
  (a) agreement: smolgrpo's greedy decode (its eval's generate, float32) against llama.cpp's
      greedy (argmax of its logits, the prompt string with the template already applied, no
      extra BOS) on the first --tokens tokens: the share of prompts whose tokens are all equal;
  (b) accuracy on --limit-acc problems for both, by the project's one correctness check, with
      Wilson 95% intervals.
It writes one JSON (--out) and prints a table. Also counted: prompts that llama.cpp tokenizes
differently from the model's tokenizer (the export's tokenizer check on real prompts).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from smolgrpo.config.schema import DataConfig
from smolgrpo.evaluation.evaluate import evaluate, wilson_interval
from smolgrpo.evaluation.settings import EvalSettings
from smolgrpo.generation.rollout import eos_token_ids, generate
from smolgrpo.models.gguf_export import write_gguf
from smolgrpo.models.loading import load_model_and_tokenizer
from smolgrpo.rewards.answers import extract_answer, is_correct
from smolgrpo.tasks import build_task
from smolgrpo.tasks.prompts import (
    PROMPT_TEMPLATE_FILE,
    PromptTemplate,
    load_prompt_template,
    render_prompt,
    select_few_shot,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/gsm8k"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="embedded or a model folder")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K folder or hub id")
    parser.add_argument("--limit-agree", type=int, default=50, help="prompts for (a) (50)")
    parser.add_argument("--limit-acc", type=int, default=200, help="problems for (b) (200)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens compared in (a) (32)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="for (b), as eval (256)")
    parser.add_argument("--outtypes", default="f16,q8_0", help="comma-separated (f16,q8_0)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--out", default="benchmarks/results/gguf_agreement.json")
    return parser.parse_args(argv)


def llama_cpp_greedy(llm, prompt: str, max_tokens: int, eos_ids: list[int]):
    """(prompt ids, greedy ids up to and including the first eos) from llama.cpp's logits."""
    prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    llm.reset()
    llm.eval(prompt_ids)
    new_ids: list[int] = []
    for _ in range(max_tokens):
        next_id = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        new_ids.append(next_id)
        if next_id in eos_ids:
            break
        llm.eval([next_id])
    return prompt_ids, new_ids


def smolgrpo_greedy(model, tokenizer, prompts: list[str], max_tokens: int, batch_size: int = 16):
    """smolgrpo's greedy ids for each prompt, cut after the first eos (as eval decodes)."""
    rows = []
    for start in range(0, len(prompts), batch_size):
        rollout = generate(
            model, tokenizer, prompts[start : start + batch_size], max_new_tokens=max_tokens
        )
        for ids, length in zip(rollout.completion_ids, rollout.completion_lengths):
            rows.append(ids[: int(length)].tolist())
    return rows


def accuracy_entry(correct: int, total: int) -> dict:
    low, high = wilson_interval(correct, total)
    return {
        "correct": correct,
        "n": total,
        "accuracy": correct / max(total, 1),
        "ci95": [low, high],
    }


def measure_gguf(path: Path, setup: dict, args) -> dict:
    """Agreement (a) and accuracy (b) of llama.cpp running the GGUF at `path`."""
    from llama_cpp import Llama

    threads = args.threads or torch.get_num_threads()
    context = min(2048, setup["model"].config.max_position_embeddings)  # scores: context x vocab
    llm = Llama(str(path), n_ctx=context, n_threads=threads, logits_all=True, verbose=False)
    tokenizer, prompts, eos_ids = setup["tokenizer"], setup["prompts"], setup["eos_ids"]
    agree, tokenization_differs = 0, 0
    for prompt, ours in zip(prompts[: args.limit_agree], setup["greedy"]):
        prompt_ids, theirs = llama_cpp_greedy(llm, prompt, args.tokens, eos_ids)
        tokenization_differs += (
            prompt_ids != tokenizer(prompt, add_special_tokens=False)["input_ids"]
        )
        agree += theirs == ours
    correct = 0
    started = time.perf_counter()
    for prompt, problem in zip(prompts[: args.limit_acc], setup["problems"]):
        _, new_ids = llama_cpp_greedy(llm, prompt, args.max_new_tokens, eos_ids)
        text = tokenizer.decode([i for i in new_ids if i not in eos_ids], skip_special_tokens=True)
        response = setup["template"].prefill + text
        correct += is_correct(extract_answer(response), problem.gold, setup["answer_check"])
    return {
        "size_mb": round(path.stat().st_size / 1e6, 1),
        "agree": agree,
        "agree_n": min(args.limit_agree, len(prompts)),
        "agree_share": agree / max(min(args.limit_agree, len(prompts)), 1),
        "prompts_tokenized_differently": tokenization_differs,
        "accuracy": accuracy_entry(correct, min(args.limit_acc, len(prompts))),
        "accuracy_time_s": round(time.perf_counter() - started, 1),
    }


def prepare(args) -> dict:
    """The model, its prompt and the problems, as `smolgrpo eval` would build them."""
    model, tokenizer = load_model_and_tokenizer(args.model, device="cpu", dtype="float32")
    saved = Path(args.model) / PROMPT_TEMPLATE_FILE
    template = load_prompt_template(saved) if saved.is_file() else PromptTemplate()
    task = build_task(DataConfig(source=args.data))
    problems = task.load("test", max(args.limit_agree, args.limit_acc))
    few_shot = []  # as eval picks them: from the train split, its default seed
    if template.num_few_shot > 0:
        few_shot = select_few_shot(task.load("train"), template.num_few_shot, seed=0)
    prompts = [render_prompt(tokenizer, p.question, template, few_shot) for p in problems]
    return {
        "model": model,
        "tokenizer": tokenizer,
        "template": template,
        "few_shot": few_shot,
        "problems": problems,
        "prompts": prompts,
        "answer_check": task.answer_check,
        "eos_ids": eos_token_ids(model, tokenizer),
    }


def smolgrpo_accuracy(setup: dict, args) -> dict:
    settings = EvalSettings(
        max_new_tokens=args.max_new_tokens,
        template=setup["template"],
        few_shot=setup["few_shot"],
        answer_check=setup["answer_check"],
    )
    problems = setup["problems"][: args.limit_acc]
    metrics, records = evaluate(setup["model"], setup["tokenizer"], problems, settings)
    correct = sum(record["correct"] for record in records)
    return {"accuracy": accuracy_entry(correct, len(records)), "accuracy_time_s": metrics["time_s"]}


def print_table(result: dict) -> None:
    head = f"{'weights':<10}{'agree (a)':>16}{'accuracy (b) [95% CI]':>32}{'size MB':>10}"
    print(head)
    print("-" * len(head))
    for name, row in result["rows"].items():
        agree = f"{row['agree']}/{row['agree_n']}" if "agree" in row else "-"
        acc = row["accuracy"]
        low, high = acc["ci95"]
        interval = f"{acc['correct']}/{acc['n']} {acc['accuracy']:.1%} [{low:.1%}, {high:.1%}]"
        print(f"{name:<10}{agree:>16}{interval:>32}{row.get('size_mb', '-'):>10}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        import llama_cpp  # noqa: F401  (checked first: the smolgrpo side takes minutes)
    except ImportError:
        sys.exit('error: this benchmark needs llama-cpp-python: pip install -e ".[llama]"')
    setup = prepare(args)
    print(f"{len(setup['prompts'])} prompts; smolgrpo greedy decodes...", file=sys.stderr)
    setup["greedy"] = smolgrpo_greedy(
        setup["model"], setup["tokenizer"], setup["prompts"][: args.limit_agree], args.tokens
    )
    rows = {"smolgrpo": smolgrpo_accuracy(setup, args)}
    with tempfile.TemporaryDirectory(prefix="gguf-agreement-") as folder:
        for outtype in args.outtypes.split(","):
            path = Path(folder) / f"model-{outtype}.gguf"
            name = Path(args.model).name
            write_gguf(setup["model"], setup["tokenizer"], setup["template"], path, outtype, name)
            print(f"llama.cpp on {outtype}...", file=sys.stderr)
            rows[f"llama.cpp {outtype}"] = measure_gguf(path, setup, args)
    result = {
        "model": args.model,
        "command": " ".join(["python", "benchmarks/gguf_agreement.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "tokens_compared": args.tokens,
        "max_new_tokens": args.max_new_tokens,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return result


if __name__ == "__main__":
    main()
