"""Tasks: what problems a run trains and evaluates on, and how an answer is checked.

A task bundles the problem loader (source, split, fields) and the answer check. Each
`data.task` value is a task kind (kinds.py, `task_kind(data.task)`): its config checks, how its
`Task` is built, its default reward weights (used when the config keeps the GSM8K defaults),
whether it has worked solutions, and how it names itself for humans. The prompt (system prompt,
prefill, few-shot rendering) stays in `prompts.py` and the `prompt:` config section, shared by
every task. Chosen with `data.task`:

* `gsm8k` (default): GSM8K JSONL or hub rows, the gold number after `####` (data.py). Its
  answer check is `None`, which means the numeric `answers_match` of rewards/answers.py: the default
  run is unchanged, bit for bit.
* `jsonl` / `csv` / `hub`: any file (or hub dataset) with a question and an answer column
  (`data.question_field`, `data.answer_field`), checked as `data.answer_type`: `number`, `exact` or `math` (files.py);
  an optional `data.solution_field` holds worked steps for the few-shot examples.
* `reasoning_gym`: a procedural dataset of the `reasoning-gym` package (`data.gym_dataset`,
  `data.gym_size`, `data.gym_seed`), checked by the dataset's own `score_answer` (gym.py).

Whatever the task, the answer is read with the hack-resistant `extract_answer` (exactly one
`<answer>` block); only the comparison with the gold changes. An answer check is
`(extracted_answer or None, gold) -> float in [0, 1]`; 1.0 means correct.
"""

from __future__ import annotations

from smolgrpo.tasks.base import ANSWER_TYPES, TEXT_REWARD_WEIGHTS, AnswerCheck, Task, TaskKind
from smolgrpo.tasks.data import keep_short_solutions, shuffle_and_limit
from smolgrpo.tasks.kinds import TASK_KINDS, saved_task_kind, task_kind

__all__ = [
    "ANSWER_TYPES",
    "TASK_KINDS",
    "TEXT_REWARD_WEIGHTS",
    "AnswerCheck",
    "Task",
    "TaskKind",
    "build_task",
    "load_train_problems",
    "saved_task_kind",
    "task_kind",
]

TASK_NAMES = tuple(TASK_KINDS)
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


def build_task(data) -> Task:
    """The task a `DataConfig` describes, its config checked first."""
    kind = task_kind(data.task)
    kind.check(data)
    return kind.build(data)


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
