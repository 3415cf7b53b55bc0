"""The `smolgrpo` command line: `eval`, `sft`, `train`, `report`, `compare`, `push`, `export`.

Each subcommand is a `add_<name>_parser` + `run_<name>` pair registered in `COMMANDS`, so adding
one touches nothing else. User errors (`SmolGRPOError`) print one `error: ...` line and exit 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from smolgrpo import __version__
from smolgrpo.cli.eval import add_eval_parser, run_eval
from smolgrpo.cli.export import add_export_parser, run_export
from smolgrpo.errors import SmolGRPOError
from smolgrpo.runs.guards import resource_error_message
from smolgrpo.runs.safe_output import guard_standard_streams


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
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in output_dir from its newest good checkpoint; a changed model, "
        "LoRA shape or task is refused, other changed settings apply from there on",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the smolgrpo run in output_dir (deleted once the model and data have "
        "loaded; a folder that is no run, or holds the model or data, is never deleted)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )


def run_train(args, trainer_class=None) -> int:
    from smolgrpo.config.loading import load_config
    from smolgrpo.training.trainer import Trainer, run_training

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"run.output_dir={args.output_dir}")
    config = load_config(args.config, overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    final = run_training(
        config,
        resume=args.resume,
        overwrite=args.overwrite,
        show_progress=not args.no_progress,
        trainer_class=trainer_class or Trainer,
    )
    if final is not None:
        print(f"saved the trained model to {final} (evaluate it: smolgrpo eval --model {final})")
    return 0


def run_sft_command(args) -> int:
    from smolgrpo.training.sft import SFTTrainer

    return run_train(args, trainer_class=SFTTrainer)


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
        help="a `smolgrpo eval` output folder: its numbers go into the report, and into the "
        "model card when it is a complete eval of this run's final/ model",
    )


def run_report(args) -> int:
    from rich.console import Console

    from smolgrpo.reporting.report import print_summary, write_report

    console = Console(stderr=True, markup=False)  # paths are never markup
    final = Path(args.run_dir) / "final"
    if args.eval_dir and final.is_dir():  # before anything is written
        from smolgrpo.evaluation.output_folder import check_eval_measured
        from smolgrpo.reporting.report import load_eval_dir

        check_eval_measured(args.eval_dir, final, load_eval_dir(args.eval_dir))
    summary = write_report(
        args.run_dir,
        args.output_dir,
        args.smooth,
        args.window,
        args.eval_dir,
        include_text=not args.no_text,
    )
    print_summary(console, summary, title=str(args.run_dir))
    if args.eval_dir and final.is_dir():
        from smolgrpo.reporting.model_card import refresh_model_card

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

    from smolgrpo.reporting.compare import print_compare, write_compare

    if args.smooth < 1:
        raise SmolGRPOError(f"--smooth must be at least 1, got {args.smooth}")
    console = Console(stderr=True, markup=False)  # paths are never markup
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
        "hub model repo with huggingface_hub, in one commit of the files --dry-run lists: no "
        "dot-file or symlink, and no absolute local path in the card or task.json. Needs a "
        "token (`hf auth login` or HF_TOKEN).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    parser.add_argument("--repo-id", required=True, metavar="USER/NAME", help="hub model repo")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the files and sizes the upload would send (and what it leaves out); upload "
        "nothing",
    )


def run_push(args) -> int:
    from smolgrpo.reporting.push import push_run

    push_run(args.run_dir, args.repo_id, private=args.private, dry_run=args.dry_run)
    return 0


COMMANDS = {
    "eval": (add_eval_parser, run_eval),
    "sft": (add_sft_parser, run_sft_command),
    "train": (add_train_parser, run_train),
    "report": (add_report_parser, run_report),
    "compare": (add_compare_parser, run_compare),
    "push": (add_push_parser, run_push),
    "export": (add_export_parser, run_export),
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
    # A closed or broken stdout/stderr (`| head`, `| tee` killed by Ctrl-C, a hung-up ssh
    # terminal) drops what is printed from then on; the command itself goes on.
    with guard_standard_streams():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
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
