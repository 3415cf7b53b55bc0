"""The task record shared by every task module: `Task`, its human title and its data source.

A module of its own so that `tasks/__init__.py` (which picks a task) and the task modules
(`files.py`, `gym.py`, which build one) both import it without importing each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smolgrpo.rewards.scoring import RewardResult, score_completions
from smolgrpo.tasks.data import HUB_DATASET_ID, Problem, resolve_source, shuffle_and_limit

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


def data_source_text(data: dict) -> str:
    """Where a run's problems came from, from its saved config's `data` mapping (model cards).

    `source: null` is resolved as loading resolves it: $SMOLGRPO_DATA_DIR, else the hub."""
    task = data.get("task", "gsm8k")
    if task == "reasoning_gym":
        return (
            f"reasoning-gym `{data.get('gym_dataset')}`, {data.get('gym_size')} generated "
            f"problems (seed {data.get('gym_seed')})"
        )
    if task in FIELD_MAPPED_TASKS:
        where = "hub dataset" if task == "hub" else f"local {task.upper()}"
        return (
            f"{where} `{data.get('source')}` (question `{data.get('question_field')}`"
            f", answer `{data.get('answer_field')}`, {data.get('answer_type')} answers)"
        )
    source = resolve_source(data.get("source"))  # None: $SMOLGRPO_DATA_DIR, else the hub
    split = data.get("train_split", "train")
    path = Path(source).expanduser()
    if source.endswith(".jsonl") or path.is_file():
        return f"local JSONL file `{source}`"
    if path.is_dir() or source.startswith((".", "/", "~")):
        return f"local JSONL `{(Path(source) / f'{split}.jsonl').as_posix()}` (`{split}` split)"
    name = "GSM8K" if source == HUB_DATASET_ID else "hub dataset"
    return f"{name} `{split}` split from the hub (`{source}`)"
