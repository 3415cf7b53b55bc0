"""The records shared by every task module: `Task` (a loaded task) and `TaskKind` (what one
`data.task` value means).

A module of its own so that `kinds.py` (which registers the kinds) and the task modules
(`files.py`, `gym.py`, which build a task) both import it without importing each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.builtin import DEFAULT_REWARD_WEIGHTS, default_reward_weights
from smolgrpo.rewards.scoring import RewardResult, score_completions
from smolgrpo.tasks.data import Problem, shuffle_and_limit

AnswerCheck = Callable[[str | None, str], float]
ANSWER_TYPES = ("number", "exact", "math")

# Answers that are not plain numbers: no integer or arithmetic rewards, which would push a
# model to write numbers where a word or an expression is the answer.
TEXT_REWARD_WEIGHTS: dict[str, float] = default_reward_weights(numeric_answers=False)


@dataclass(frozen=True)
class Task:
    """A loaded task: `load(split, limit, seed, shuffle)` gives its problems; `loader(split)`
    reads all of a split's problems, in order."""

    kind: TaskKind
    title: str  # for humans: "GSM8K", "countdown (reasoning-gym)", "JSONL `qa.jsonl`"
    loader: Callable[[str], list[Problem]]
    answer_check: AnswerCheck | None  # None: the GSM8K numeric check of rewards/answers.py

    @property
    def name(self) -> str:
        """The `data.task` value it was built from."""
        return self.kind.name

    def load(
        self, split: str, limit: int | None = None, seed: int = 0, shuffle: bool = False
    ) -> list[Problem]:
        return shuffle_and_limit(self.loader(split), limit, seed, shuffle)

    def score(
        self, completions, golds, weights, questions=None, step=None, extra_fields=None
    ) -> RewardResult:
        """`rewards.score_completions` with this task's correctness check."""
        return score_completions(
            completions, golds, weights, questions, step, self.answer_check, extra_fields
        )


class TaskKind:
    """One `data.task` value (kinds.py registers one of each): how its config is checked, how
    its `Task` is built, and what it says about itself.

    `data` is a `DataConfig` for `check`, `build`, `has_worked_solutions` and
    `default_reward_weights`; a saved config's `data` mapping (model cards, reports) for the
    rest."""

    name: str
    # Reads question/answer(/solution) columns through data.question_field, ... (jsonl, csv, hub).
    field_mapped = False
    # Whether eval's metrics name the task (GSM8K's metrics stay as they were before tasks).
    named_in_eval_metrics = True

    def check(self, data) -> None:
        """One-line errors for a `data:` section of this kind (config validation)."""
        check_answer_type(data)
        self.check_solution_steps(data)

    def check_solution_steps(self, data) -> None:
        if data.max_solution_steps is not None and not self.has_worked_solutions(data):
            raise SmolGRPOError(
                "config: data.max_solution_steps needs worked solutions to count steps in: "
                f"task gsm8k, or jsonl/csv/hub with data.solution_field (not '{data.task}')"
            )

    def build(self, data) -> Task:
        """The task a checked `DataConfig` describes."""
        raise NotImplementedError

    def has_worked_solutions(self, data) -> bool:
        """Whether the problems carry worked steps (what SFT trains on and
        `max_solution_steps` counts)."""
        return False

    def default_reward_weights(self, data) -> dict:
        """The reward weights the task starts from when the config sets none of its own."""
        return dict(DEFAULT_REWARD_WEIGHTS)

    def title(self, data: dict) -> str:
        """The task's name for humans (model cards, reports, eval metrics)."""
        raise NotImplementedError

    def source_text(self, data: dict) -> str:
        """Where a run's problems came from (model cards)."""
        raise NotImplementedError

    def card_tags(self, data: dict) -> list[str]:
        """The model card's metadata tags for the task."""
        return [self.name]

    def card_datasets(self, data: dict) -> list[str]:
        """The hub datasets the model card's metadata names."""
        return []

    def card_subject(self, data: dict, wording: str = "heading") -> str:
        """What the model was trained on, in the card's `heading`, `problems` or
        `limitations` sentence."""
        return self.title(data)

    def local_source(self, data: dict) -> str | None:
        """The file or folder on disk the problems are read from (None: generated, or hub)."""
        return None


def check_answer_type(data) -> None:
    if data.answer_type not in ANSWER_TYPES:
        raise SmolGRPOError(
            f"config: unknown answer type '{data.answer_type}' for 'data.answer_type' "
            f"(valid: {', '.join(ANSWER_TYPES)})"
        )
