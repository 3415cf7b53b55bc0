"""The task flags of `smolgrpo eval`: the same choices as a recipe's `data:` section."""

from __future__ import annotations

from types import SimpleNamespace

from smolgrpo.tasks import ANSWER_TYPES, TASK_NAMES, Task, build_task


def add_task_arguments(group) -> None:
    group.add_argument(
        "--task", default="gsm8k", help=f"{', '.join(TASK_NAMES)} (default: %(default)s)"
    )
    group.add_argument("--question-field", default="question", help="jsonl/csv question column")
    group.add_argument("--answer-field", default="answer", help="jsonl/csv answer column")
    group.add_argument(
        "--answer-type", default="number", help=f"jsonl/csv: {', '.join(ANSWER_TYPES)} (number)"
    )
    group.add_argument("--gym-dataset", default="countdown", help="reasoning_gym dataset name")
    group.add_argument("--gym-size", type=int, default=1000, help="reasoning_gym problems (1000)")
    group.add_argument(
        "--gym-seed", type=int, default=0, help="reasoning_gym seed of the train split (0)"
    )


def task_from_args(args) -> Task:
    data = SimpleNamespace(  # a recipe's DataConfig, without importing config (a cycle)
        task=args.task,
        train_split="train",
        source=args.data,
        question_field=args.question_field,
        answer_field=args.answer_field,
        answer_type=args.answer_type,
        gym_dataset=args.gym_dataset,
        gym_size=args.gym_size,
        gym_seed=args.gym_seed,
    )
    return build_task(data)
