"""The task flags of `smolgrpo eval`: the same choices as a recipe's `data:` section.

A model that `smolgrpo train` saved holds its run's task (`task.json`): `eval` of it starts from
that task, so a Countdown model is evaluated on Countdown without repeating the flags; a flag
given on the command line wins over the saved value."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import yaml

from smolgrpo.config.parse import type_ok
from smolgrpo.config.schema import DataConfig
from smolgrpo.errors import SmolGRPOError
from smolgrpo.tasks import ANSWER_TYPES, TASK_FIELDS, TASK_FILE, TASK_NAMES, Task, build_task


def task_defaults() -> dict:
    """The task fields of a recipe's `data:` section at their defaults (config.DataConfig)."""
    data = DataConfig()
    return {name: getattr(data, name) for name in TASK_FIELDS}


def add_task_arguments(group) -> None:
    saved = f"(default: the model's saved {TASK_FILE}, else %s)"
    group.add_argument("--task", default=None, help=f"{', '.join(TASK_NAMES)} {saved % 'gsm8k'}")
    group.add_argument("--question-field", default=None, help="jsonl/csv question column")
    group.add_argument("--answer-field", default=None, help="jsonl/csv answer column")
    group.add_argument(
        "--solution-field", default=None, help="jsonl/csv worked-steps column (few-shot examples)"
    )
    group.add_argument("--hub-config", default=None, help="hub task: the dataset's configuration")
    group.add_argument(
        "--answer-type", default=None, help=f"jsonl/csv: {', '.join(ANSWER_TYPES)} (number)"
    )
    group.add_argument("--gym-dataset", default=None, help="reasoning_gym dataset (countdown)")
    group.add_argument("--gym-size", type=int, default=None, help="reasoning_gym problems (1000)")
    group.add_argument(
        "--gym-seed", type=int, default=None, help="reasoning_gym seed of the train split (0)"
    )
    group.add_argument(
        "--gym-config",
        default=None,
        help="reasoning_gym dataset options as YAML, e.g. '{min_numbers: 3, max_numbers: 3}'",
    )
    group.add_argument(
        "--gym-check-timeout-s",
        type=float,
        default=None,
        help="reasoning_gym: seconds each answer's sandboxed check may take (1; past it: 0)",
    )


def saved_task_fields(model: str | None) -> dict:
    """The task a trained model was trained on (`task.json` in its folder), else {}."""
    if model is None or not (Path(model) / TASK_FILE).is_file():
        return {}
    path = Path(model) / TASK_FILE
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise SmolGRPOError(f"{path}: unreadable task file ({error})") from None
    if not isinstance(fields, dict):
        raise SmolGRPOError(f"{path}: unreadable task file (not a JSON object)")
    fields = {key: value for key, value in fields.items() if key in TASK_FIELDS}
    hints = typing.get_type_hints(DataConfig)
    shown = {field.name: field.type for field in dataclasses.fields(DataConfig)}
    for key, value in fields.items():  # the types a recipe's `data:` section must have
        if not type_ok(value, hints[key]):
            raise SmolGRPOError(f"{path}: '{key}' should be {shown[key]}, got {value!r}")
    return fields


def task_from_args(args) -> Task:
    return build_task(DataConfig(**task_fields_from_args(args)))


def task_fields_from_args(args) -> dict:
    """The task fields (`TASK_FIELDS`) that the flags and the model's saved task give."""
    fields = {**task_defaults(), **saved_task_fields(args.model)}
    if args.task is not None and args.task != fields["task"]:
        fields = task_defaults()  # another task than the saved one: none of its settings apply
    explicit = {
        "task": args.task,
        "source": args.data,
        "question_field": args.question_field,
        "answer_field": args.answer_field,
        "solution_field": args.solution_field,
        "hub_config": args.hub_config,
        "answer_type": args.answer_type,
        "gym_dataset": args.gym_dataset,
        "gym_size": args.gym_size,
        "gym_seed": args.gym_seed,
        "gym_config": _gym_config(args.gym_config),
    }
    fields.update({key: value for key, value in explicit.items() if value is not None})
    timeout = getattr(args, "gym_check_timeout_s", None)
    if timeout is not None:
        if not 0 < timeout <= 600:
            raise SmolGRPOError(f"--gym-check-timeout-s must be > 0 and <= 600, got {timeout}")
        fields["gym_check_timeout_s"] = timeout
    return fields


def _gym_config(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise SmolGRPOError(f"--gym-config {text!r}: expected a YAML mapping, e.g. '{{a: 1}}'")
    return value
