"""Scoring a batch: every reward named in the weights, summed with its weight.

`score_completions` calls each reward with the same fields (`answers`, `questions`, the task's
`answer_check`, `step`, and the caller's `extra_fields`), records each reward's values and wall time for logging, and counts
the answer checks that timed out or failed (reasoning-gym's, run in the sandbox).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smolgrpo.rewards.builtin import REWARDS
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
    extra_fields: dict | None = None,
) -> RewardResult:
    """Run every reward named in ``weights`` and sum them with those weights.

    Every reward, built-in (REWARDS) or a user's (a name with a colon, plugins.py), is called
    the same way: ``reward(completions, answers=..., questions=..., answer_check=...)``.
    ``answer_check`` is the task's (tasks/; None: GSM8K's numeric match). A reward whose list
    says how its checks ended (`AnswerChecks`, the sandboxed checks) adds its timeouts and
    errors to the result's counts.

    Rewards with weight 0 are still computed so they can be logged. An unknown reward name or
    mismatched list lengths are caller/config errors and raise ValueError. ``extra_fields``
    are added to the fields every reward gets: the trainer and `eval` pass `completion_tokens`
    (one int per completion), `max_completion_length` and `overlong_buffer` (overlong_penalty). A user's reward
    that fails is a SmolGRPOError naming it and ``step``.
    """
    unknown = sorted(name for name in weights if name not in REWARDS and not is_plugin(name))
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; valid names are {sorted(REWARDS)}")
    completions = list(completions)
    fields = {"answers": list(gold_answers), "questions": questions, "answer_check": answer_check}
    fields.update(extra_fields or {})
    if len(completions) != len(fields["answers"]):
        raise ValueError(f"got {len(completions)} completions but {len(gold_answers)} gold answers")
    if questions is not None and len(questions) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(questions)} questions")
    result = RewardResult(total=[0.0] * len(completions), per_reward={})
    for name in weights:
        started = time.perf_counter()
        if is_plugin(name):
            values = score_plugin(name, completions, fields, step)
        else:
            values = REWARDS[name].function(completions, **fields)
        result.seconds[name] = time.perf_counter() - started
        result.timeouts += getattr(values, "timeouts", 0)
        result.errors += getattr(values, "errors", 0)
        result.per_reward[name] = list(values)
        for index, value in enumerate(values):
            result.total[index] += float(weights[name]) * value
    return result
