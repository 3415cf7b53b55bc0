"""Scoring a batch: every reward named in the weights, summed with its weight.

`score_completions` calls each reward with the same fields (`answers`, `questions`, the task's
`answer_check`, `step`), records each reward's values and wall time for logging, and counts
the answer checks that timed out or failed (reasoning-gym's, run in the sandbox).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smolgrpo.rewards.answers import AnswerChecks, check_answers, extract_answer
from smolgrpo.rewards.builtin import QUESTION_REWARDS, REWARD_FUNCTIONS
from smolgrpo.rewards.plugins import is_plugin, score_plugin


@dataclass
class RewardResult:
    """Weighted total per completion, plus each reward's unweighted values for logging."""

    total: list[float]
    per_reward: dict[str, list[float]]
    seconds: dict[str, float] = field(default_factory=dict)  # each reward's wall time
    timeouts: int = 0  # answer checks stopped at their time limit (see check_answers)
    errors: int = 0  # answer checks that raised, exited or crashed


def score_completions(
    completions: list[str],
    gold_answers: list[str],
    weights: dict[str, float],
    questions: list[str] | None = None,
    step: int | None = None,
    answer_check: Callable[[str | None, str], float] | None = None,
) -> RewardResult:
    """Run every reward named in ``weights`` and sum them with those weights.

    ``questions`` (one per completion) feed the rewards in QUESTION_REWARDS; without them those
    rewards score 0. ``answer_check`` (a task's, see tasks/): the correctness reward scores
    ``answer_check(extract_answer(completion), gold)`` instead of the numeric GSM8K match,
    through `check_answers` (a sandboxed check gets the batch at once); the checks that timed
    out or failed are counted in the result's ``timeouts`` and ``errors``.

    Rewards with weight 0 are still computed so they can be logged. An unknown reward name or
    mismatched list lengths are caller/config errors and raise ValueError. A name with a colon
    is a user's reward (reward_plugins.py): its failures are SmolGRPOErrors naming ``step``.
    """
    unknown = sorted(
        name for name in weights if name not in REWARD_FUNCTIONS and not is_plugin(name)
    )
    if unknown:
        raise ValueError(
            f"unknown reward name(s) {unknown}; valid names are {sorted(REWARD_FUNCTIONS)}"
        )
    completions = list(completions)
    gold_answers = list(gold_answers)
    if len(completions) != len(gold_answers):
        raise ValueError(f"got {len(completions)} completions but {len(gold_answers)} gold answers")
    if questions is not None and len(questions) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(questions)} questions")
    per_reward, seconds, checked = {}, {}, AnswerChecks([])
    for name in weights:
        started = time.perf_counter()
        if is_plugin(name):
            per_reward[name] = score_plugin(name, completions, gold_answers, questions, step)
        elif name == "correctness" and answer_check is not None:
            checked = check_answers(
                answer_check, [extract_answer(c) for c in completions], gold_answers
            )
            per_reward[name] = checked.scores
        elif name in QUESTION_REWARDS:
            per_reward[name] = REWARD_FUNCTIONS[name](
                completions, gold_answers, questions=questions
            )
        else:
            per_reward[name] = REWARD_FUNCTIONS[name](completions, gold_answers)
        seconds[name] = time.perf_counter() - started
    total = [
        sum(float(weights[name]) * per_reward[name][index] for name in weights)
        for index in range(len(completions))
    ]
    return RewardResult(
        total=total,
        per_reward=per_reward,
        seconds=seconds,
        timeouts=checked.timeouts,
        errors=checked.errors,
    )
