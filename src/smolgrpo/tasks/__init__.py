"""Tasks: what problems a run trains and evaluates on, and how an answer is checked.

A task bundles the problem loader (source, split, fields), the answer check and its default
reward weights (`default_reward_weights`, used when the config keeps the GSM8K defaults). The prompt (system prompt, prefill, few-shot rendering) stays in `prompts.py`
and the `prompt:` config section, shared by every task. Chosen with `data.task`:

* `gsm8k` (default): GSM8K JSONL or hub rows, the gold number after `####` (data.py). Its
  answer check is `None`, which means the numeric `answers_match` of rewards.py: the default
  run is unchanged, bit for bit.
* `jsonl` / `csv`: any file with a question and an answer column (`data.question_field`,
  `data.answer_field`), checked as `data.answer_type`: `number`, `exact` or `math` (files.py);
  an optional `data.solution_field` holds worked steps for the few-shot examples.
* `reasoning_gym`: a procedural dataset of the `reasoning-gym` package (`data.gym_dataset`,
  `data.gym_size`, `data.gym_seed`), checked by the dataset's own `score_answer` (gym.py).

Whatever the task, the answer is read with the hack-resistant `extract_answer` (exactly one
`<answer>` block); only the comparison with the gold changes. An answer check is
`(extracted_answer or None, gold) -> float in [0, 1]`; 1.0 means correct.
"""

from __future__ import annotations

from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.builtin import DEFAULT_REWARD_WEIGHTS
from smolgrpo.rewards.builtin import default_reward_weights as default_reward_weights_for
from smolgrpo.tasks.base import FIELD_MAPPED_TASKS, AnswerCheck, Task, task_title
from smolgrpo.tasks.data import keep_short_solutions, load_problems, shuffle_and_limit

__all__ = [
    "FIELD_MAPPED_TASKS",
    "AnswerCheck",
    "Task",
    "build_task",
    "default_reward_weights",
    "has_worked_solutions",
    "load_train_problems",
    "task_title",
]

TASK_NAMES = ("gsm8k", "jsonl", "csv", "hub", "reasoning_gym")
TASK_FILE = "task.json"  # a run's task, saved beside its model so `eval` can default to it
TASK_FIELDS = (  # the `data:` keys that say what a problem is and how its answer is checked
    "task",
    "source",
    "train_split",
    "question_field",
    "answer_field",
    "solution_field",
    "hub_config",
    "answer_type",
    "gym_dataset",
    "gym_size",
    "gym_seed",
    "gym_config",
)
ANSWER_TYPES = ("number", "exact", "math")

# Answers that are not plain numbers: no integer or arithmetic rewards, which would push a
# model to write numbers where a word or an expression is the answer.
TEXT_REWARD_WEIGHTS: dict[str, float] = default_reward_weights_for(numeric_answers=False)


def has_worked_solutions(data) -> bool:
    """Whether a `DataConfig`'s problems carry worked steps: GSM8K's, or a file task's
    `data.solution_field` column (what SFT trains on and `max_solution_steps` counts)."""
    return data.task == "gsm8k" or (data.task in FIELD_MAPPED_TASKS and bool(data.solution_field))


def check_task_config(data) -> None:
    """One-line errors for a `data:` section that names no valid task (config validation)."""
    if data.task not in TASK_NAMES:
        raise SmolGRPOError(
            f"config: unknown task '{data.task}' for 'data.task' (valid: {', '.join(TASK_NAMES)})"
        )
    if data.answer_type not in ANSWER_TYPES:
        raise SmolGRPOError(
            f"config: unknown answer type '{data.answer_type}' for 'data.answer_type' "
            f"(valid: {', '.join(ANSWER_TYPES)})"
        )
    if data.task in FIELD_MAPPED_TASKS:
        from smolgrpo.tasks.files import answer_check_for

        answer_check_for(data.answer_type)  # math without math-verify: one line naming the extra
    if data.max_solution_steps is not None and not has_worked_solutions(data):
        raise SmolGRPOError(
            "config: data.max_solution_steps needs worked solutions to count steps in: "
            f"task gsm8k, or jsonl/csv/hub with data.solution_field (not '{data.task}')"
        )
    if data.task == "reasoning_gym":
        from smolgrpo.tasks.gym import check_gym_config

        check_gym_config(data.gym_dataset, data.gym_size, data.gym_config)


def build_task(data) -> Task:
    """The task a `DataConfig` describes (validated by `check_task_config` first)."""
    check_task_config(data)
    if data.task == "gsm8k":
        return Task(
            "gsm8k",
            "GSM8K",
            lambda split: load_problems(data.source, split),
            None,
        )
    if data.task == "reasoning_gym":
        from smolgrpo.tasks.gym import build_gym_task

        return build_gym_task(data)
    from smolgrpo.tasks.files import build_file_task

    return build_file_task(data)


def load_train_problems(task: Task, data) -> list:
    """The training problems a `DataConfig` names: its train split, cut to the problems with
    at most `data.max_solution_steps` reference steps (when set), then to `data.train_limit`."""
    problems = keep_short_solutions(task.loader(data.train_split), data.max_solution_steps)
    return shuffle_and_limit(problems, data.train_limit, 0, False)


def save_task(data, path) -> None:
    """Write a `DataConfig`'s task fields as JSON (`eval` of the saved model reads them back)."""
    import json
    from pathlib import Path

    fields = {name: getattr(data, name) for name in TASK_FIELDS}
    Path(path).write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")


def default_reward_weights(data) -> dict:
    """The reward weights a task starts from when the config sets none of its own."""
    if data.task == "reasoning_gym" or (
        data.task in FIELD_MAPPED_TASKS and data.answer_type != "number"
    ):
        return dict(TEXT_REWARD_WEIGHTS)
    return dict(DEFAULT_REWARD_WEIGHTS)
