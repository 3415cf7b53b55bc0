"""The task record shared by every task module: `Task` and its human title.

A module of its own so that `tasks/__init__.py` (which picks a task) and the task modules
(`files.py`, `gym.py`, which build one) both import it without importing each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smolgrpo.data import Problem, shuffle_and_limit
from smolgrpo.rewards import RewardResult, score_completions

AnswerCheck = Callable[[str | None, str], float]
# Tasks read through a field mapping (question/answer/solution columns, data.answer_type).
FIELD_MAPPED_TASKS = ("jsonl", "csv", "hub")


@dataclass(frozen=True)
class Task:
    """A loaded task: `load(split, limit, seed, shuffle)` gives its problems; `loader(split)`
    reads all of a split's problems, in order."""

    name: str  # a TASK_NAMES entry
    title: str  # for humans: "GSM8K", "countdown (reasoning-gym)", "JSONL `qa.jsonl`"
    loader: Callable[[str], list[Problem]]
    answer_check: AnswerCheck | None  # None: the GSM8K numeric check of rewards.py

    def load(
        self, split: str, limit: int | None = None, seed: int = 0, shuffle: bool = False
    ) -> list[Problem]:
        return shuffle_and_limit(self.loader(split), limit, seed, shuffle)

    def score(self, completions, golds, weights, questions=None, step=None) -> RewardResult:
        """`rewards.score_completions` with this task's correctness check."""
        return score_completions(completions, golds, weights, questions, step, self.answer_check)


def task_title(data: dict) -> str:
    """A task's name for humans from a saved config's `data` mapping (model cards, reports)."""
    task = data.get("task", "gsm8k")
    if task == "reasoning_gym":
        options = data.get("gym_config") or {}
        shown = ", ".join(f"{key}={value}" for key, value in options.items())
        return f"{data.get('gym_dataset', '?')} (reasoning-gym{'; ' + shown if shown else ''})"
    if task in FIELD_MAPPED_TASKS:
        kind = "hub dataset" if task == "hub" else task.upper()
        return f"{kind} `{data.get('source')}` ({data.get('answer_type', 'number')} answers)"
    return "GSM8K"
