"""Tasks: what problems a run trains and evaluates on, and how an answer is checked.

A task bundles the problem loader (source, split, fields), the answer check and its default
reward weights (`default_reward_weights`, used when the config keeps the GSM8K defaults). The prompt (system prompt, prefill, few-shot rendering) stays in `prompts.py`
and the `prompt:` config section, shared by every task. Chosen with `data.task`:

* `gsm8k` (default): GSM8K JSONL or hub rows, the gold number after `####` (data.py). Its
  answer check is `None`, which means the numeric `answers_match` of rewards.py: the default
  run is unchanged, bit for bit.
* `jsonl` / `csv`: any file with a question and an answer column (`data.question_field`,
  `data.answer_field`), checked as `data.answer_type`: `number`, `exact` or `math` (files.py).
* `reasoning_gym`: a procedural dataset of the `reasoning-gym` package (`data.gym_dataset`,
  `data.gym_size`, `data.gym_seed`), checked by the dataset's own `score_answer` (gym.py).

Whatever the task, the answer is read with the hack-resistant `extract_answer` (exactly one
`<answer>` block); only the comparison with the gold changes. An answer check is
`(extracted_answer or None, gold) -> float in [0, 1]`; 1.0 means correct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smolgrpo.data import Problem, load_problems
from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards import DEFAULT_REWARD_WEIGHTS, RewardResult, score_completions

TASK_NAMES = ("gsm8k", "jsonl", "csv", "reasoning_gym")
ANSWER_TYPES = ("number", "exact", "math")

# Answers that are not plain numbers: no integer or arithmetic rewards, which would push a
# model to write numbers where a word or an expression is the answer.
TEXT_REWARD_WEIGHTS: dict[str, float] = {
    "correctness": 2.0,
    "strict_format": 0.5,
    "soft_format": 0.25,
    "xml_count": 0.25,
}

AnswerCheck = Callable[[str | None, str], float]


@dataclass(frozen=True)
class Task:
    """A loaded task: `load(split, limit, seed, shuffle)` gives its problems."""

    name: str  # a TASK_NAMES entry
    title: str  # for humans: "GSM8K", "countdown (reasoning-gym)", "JSONL `qa.jsonl`"
    loader: Callable[..., list[Problem]]
    answer_check: AnswerCheck | None  # None: the GSM8K numeric check of rewards.py

    def load(
        self, split: str, limit: int | None = None, seed: int = 0, shuffle: bool = False
    ) -> list[Problem]:
        return self.loader(split, limit, seed, shuffle)

    def score(self, completions, golds, weights, questions=None, step=None) -> RewardResult:
        """`rewards.score_completions` with this task's correctness check."""
        return score_completions(completions, golds, weights, questions, step, self.answer_check)


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
    if data.task in ("jsonl", "csv"):
        from smolgrpo.tasks.files import answer_check_for

        answer_check_for(data.answer_type)  # math without math-verify: one line naming the extra
    if data.task == "reasoning_gym":
        from smolgrpo.tasks.gym import check_gym_config

        check_gym_config(data.gym_dataset, data.gym_size)


def build_task(data) -> Task:
    """The task a `DataConfig` describes (validated by `check_task_config` first)."""
    check_task_config(data)
    if data.task == "gsm8k":
        return Task(
            "gsm8k",
            "GSM8K",
            lambda split, limit, seed, shuffle: load_problems(
                data.source, split, limit, seed, shuffle
            ),
            None,
        )
    if data.task == "reasoning_gym":
        from smolgrpo.tasks.gym import build_gym_task

        return build_gym_task(data)
    from smolgrpo.tasks.files import build_file_task

    return build_file_task(data)


def task_title(data: dict) -> str:
    """A task's name for humans from a saved config's `data` mapping (model cards, reports)."""
    task = data.get("task", "gsm8k")
    if task == "reasoning_gym":
        return f"{data.get('gym_dataset', '?')} (reasoning-gym)"
    if task in ("jsonl", "csv"):
        return (
            f"{task.upper()} `{data.get('source')}` ({data.get('answer_type', 'number')} answers)"
        )
    return "GSM8K"


def default_reward_weights(data) -> dict:
    """The reward weights a task starts from when the config sets none of its own."""
    if data.task == "reasoning_gym" or (
        data.task in ("jsonl", "csv") and data.answer_type != "number"
    ):
        return dict(TEXT_REWARD_WEIGHTS)
    return dict(DEFAULT_REWARD_WEIGHTS)
