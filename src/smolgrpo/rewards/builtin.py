"""Reward functions that score GSM8K completions for GRPO training.

A completion is the model's full response text and should look like::

    <reasoning>
    12 * 5 = 60, 60 - 8 = 52
    </reasoning>
    <answer>
    52
    </answer>

Each reward is ``(completions, **fields) -> list[float]``, one float in [0, 1] per completion;
the fields are ``answers`` (the gold answers) and ``questions`` (one per completion) and the
task's ``answer_check``, as TRL and open-r1 pass dataset columns. Built-in rewards are
registered in ``REWARDS`` with their default weight (``register``); ``score_completions``
(scoring.py) combines them with weights into the scalar GRPO reward.

Design choices:

* Hostile input is the normal case: the policy is optimised against these functions, so every
  loophole will be found. Scoring never raises (an exception while scoring one completion gives
  0.0 for that completion), never calls ``eval``/``exec``, and runs in linear time: tags are
  found with ``str.find``/``str.count`` and every regex is free of nested quantifiers.
* Exactly one ``<answer>`` block counts. Several answer tags, nested tags, or an answer holding
  several numbers (``72, 73``) all score zero, so the model cannot list guesses.
* Only ASCII digits are numbers. Look-alike digits (Arabic-Indic ``٧٢``, mathematical bold
  ``𝟕𝟐``, superscripts, vulgar fractions) are a known reward hack against lenient parsers, and
  GSM8K answers never need them, so any non-ASCII numeric character makes an answer unparseable.
* Fractions such as ``3/4`` are read as two numbers and rejected: GSM8K gold answers are plain
  numbers, and accepting ``a/b`` would invite answers like ``144/2`` that hide the arithmetic.
* The correctness reward and the evaluator share ``extract_answer`` and ``is_correct`` (answers.py)
  so the training signal and the reported accuracy can never disagree.
* ``DEFAULT_REWARD_WEIGHTS``: correctness dominates. The format pieces give partial credit so a
  base model, which rarely writes the tags, still gets a non-zero and varied reward within a
  group (GRPO learns nothing from a group with identical rewards). Arithmetic consistency is
  weighted low because it is easy to farm with trivially true equations.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

from smolgrpo.rewards.answers import (
    ALL_TAGS,
    ANSWER_CLOSE,
    ANSWER_OPEN,
    CORRECT,
    REASONING_CLOSE,
    REASONING_OPEN,
    _clamp,
    check_answers,
    extract_answer,
    is_correct,
    parse_number,
)
from smolgrpo.rewards.arithmetic import ARITHMETIC_SCAN_CHARS, check_equations
from smolgrpo.rewards.grounding import grounded_steps

_INTEGER_ANSWER_RE = re.compile(r"[-+\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)")


def _score_correctness(completion: str, gold: str | None) -> float:
    return CORRECT if is_correct(extract_answer(completion), gold) else 0.0


def _score_strict_format(completion: str, _gold: str | None) -> float:
    text = completion.strip()
    if any(text.count(tag) != 1 for tag in ALL_TAGS):
        return 0.0
    if not (text.startswith(REASONING_OPEN) and text.endswith(ANSWER_CLOSE)):
        return 0.0
    reasoning_end = text.find(REASONING_CLOSE) + len(REASONING_CLOSE)
    answer_start = text.find(ANSWER_OPEN)
    if answer_start < reasoning_end or text[reasoning_end:answer_start].strip():
        return 0.0
    answer = text[answer_start + len(ANSWER_OPEN) : -len(ANSWER_CLOSE)]
    return 1.0 if answer.strip() else 0.0


def _score_soft_format(completion: str, _gold: str | None) -> float:
    positions = [completion.find(tag) for tag in ALL_TAGS]
    if -1 in positions:
        return 0.0
    return 1.0 if all(a < b for a, b in itertools.pairwise(positions)) else 0.0


def _score_xml_count(completion: str, _gold: str | None) -> float:
    score = sum(0.25 for tag in ALL_TAGS if completion.count(tag) == 1)
    answer_close = completion.find(ANSWER_CLOSE)
    if answer_close != -1:
        trailing = completion[answer_close + len(ANSWER_CLOSE) :]
        trailing_chars = len("".join(trailing.split()))  # non-whitespace characters only
        score -= min(0.25, 0.001 * trailing_chars)
    return max(0.0, score)


def _score_integer_answer(completion: str, _gold: str | None) -> float:
    answer = extract_answer(completion)
    return 1.0 if answer is not None and _INTEGER_ANSWER_RE.fullmatch(answer) else 0.0


def _reasoning_section(completion: str) -> str:
    start = completion.find(REASONING_OPEN)
    if start == -1:
        return completion[:ARITHMETIC_SCAN_CHARS]
    start += len(REASONING_OPEN)
    end = completion.find(REASONING_CLOSE, start)
    if end == -1:
        end = len(completion)
    return completion[start : min(end, start + ARITHMETIC_SCAN_CHARS)]


def _score_arithmetic(completion: str, _gold: str | None) -> float:
    outcomes = check_equations(_reasoning_section(completion))
    return sum(outcomes) / len(outcomes) if outcomes else 0.0


def _score_grounded_arithmetic(completion: str, question: str | None) -> float:
    """0 unless the answer is the result of a grounded step (grounding.py), i.e. the end of a
    chain of true, non-trivial equations rooted in the problem; then the share of grounded
    steps among the grounded and false ones, so a wrong equation beside the chain costs while
    identities, restatements and pasted equations earn nothing either way."""
    answer = parse_number(extract_answer(completion))
    if not question or answer is None:
        return 0.0
    steps = grounded_steps(_reasoning_section(completion), question)
    derived = [step.value for step in steps if step.derived]
    if not any(abs(value - answer) <= 1e-6 * max(1.0, abs(answer)) for value in derived):
        return 0.0
    grounded = sum(step.verdict == "grounded" for step in steps)
    false = sum(step.verdict == "false" for step in steps)
    return grounded / (grounded + false)


def _score_each(
    score_one: Callable[[str, str | None], float],
    completions: list[str],
    gold_answers: list[str] | None = None,
) -> list[float]:
    """Apply score_one to each completion (with its gold answer or question, where given); any
    failure scores 0.0 instead of raising."""
    try:
        golds = list(gold_answers or [])
    except TypeError:
        golds = []
    scores = []
    for index, completion in enumerate(completions):
        gold = golds[index] if index < len(golds) else None
        try:
            value = float(score_one(completion, gold)) if isinstance(completion, str) else 0.0
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - a hostile completion must never end training
            value = 0.0
        scores.append(_clamp(value))
    return scores


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class RewardSpec:
    """A built-in reward: its function, its weight in the default recipe (0: only when a
    recipe names it) and whether it only makes sense for numeric answers (then left out of the
    defaults of tasks whose answers are words or expressions)."""

    function: Callable[..., list[float]]
    default_weight: float = 0.0
    numbers_only: bool = False


REWARDS: dict[str, RewardSpec] = {}


def register(name: str, default_weight: float = 0.0, numbers_only: bool = False):
    """Add a reward `(completions, **fields) -> list[float]` to REWARDS under `name`."""

    def add(function: Callable[..., list[float]]) -> Callable[..., list[float]]:
        REWARDS[name] = RewardSpec(function, default_weight, numbers_only)
        return function

    return add


def default_reward_weights(numeric_answers: bool = True) -> dict[str, float]:
    """The registered rewards that are on by default, with their weights; without numeric
    answers, those that only make sense for numbers are left out."""
    return {
        name: spec.default_weight
        for name, spec in REWARDS.items()
        if spec.default_weight and (numeric_answers or not spec.numbers_only)
    }


# --------------------------------------------------------------------------- public rewards
# Every reward is `(completions, **fields) -> list[float]`, one value in [0, 1] per completion;
# the fields are `answers` and `questions` (one per completion) and the task's `answer_check`.


@register("correctness", default_weight=2.0)
def correctness_reward(completions, answers=None, answer_check=None, **fields) -> list[float]:
    """1.0 when the single <answer> block is right: the task's `answer_check` (then the
    returned list also says how each check ended, see check_answers), else GSM8K's numeric
    match."""
    if answer_check is None:
        return _score_each(_score_correctness, completions, answers)
    return check_answers(answer_check, [extract_answer(c) for c in completions], answers or [])


@register("strict_format", default_weight=0.5)
def strict_format_reward(completions, answers=None, **fields) -> list[float]:
    """1.0 when the text is exactly one <reasoning> block then one non-empty <answer> block."""
    return _score_each(_score_strict_format, completions)


@register("soft_format", default_weight=0.25)
def soft_format_reward(completions, answers=None, **fields) -> list[float]:
    """1.0 when the first occurrences of the four tags appear in the right order."""
    return _score_each(_score_soft_format, completions)


@register("xml_count", default_weight=0.25)
def xml_count_reward(completions, answers=None, **fields) -> list[float]:
    """0.25 per tag present exactly once, minus 0.001 per character after </answer> (max 0.25)."""
    return _score_each(_score_xml_count, completions)


@register("integer_answer", default_weight=0.25, numbers_only=True)
def integer_answer_reward(completions, answers=None, **fields) -> list[float]:
    """1.0 when the answer is a bare integer such as ``72``, ``-12`` or ``1,000``."""
    return _score_each(_score_integer_answer, completions)


@register("arithmetic_consistency", default_weight=0.25, numbers_only=True)
def arithmetic_consistency_reward(completions, answers=None, **fields) -> list[float]:
    """Fraction of distinct, non-trivial equations in the reasoning that hold (0.0 if none)."""
    return _score_each(_score_arithmetic, completions)


@register("grounded_arithmetic", numbers_only=True)
def grounded_arithmetic_reward(completions, answers=None, questions=None, **fields) -> list[float]:
    """0 unless the answer ends a chain of true equations rooted in the problem (grounding.py);
    then the share of grounded steps among grounded and false ones. 0.0 without the questions."""
    return _score_each(_score_grounded_arithmetic, completions, questions or [])


@register("overlong_penalty")
def overlong_penalty_reward(
    completions,
    completion_tokens=None,
    max_completion_length=None,
    overlong_buffer=0,
    **fields,
) -> list[float]:
    """DAPO's soft overlong penalty, the one reward in [-1, 0] (a penalty, so weight > 0):
    with L tokens, budget Lmax and buffer Lb, 0 if L <= Lmax - Lb, (Lmax - Lb - L) / Lb if
    L <= Lmax, -1 beyond. 0.0 for all when the lengths, the budget or the buffer are missing."""
    if not completion_tokens or not max_completion_length or not overlong_buffer:
        return [0.0] * len(completions)
    start = max_completion_length - overlong_buffer  # the penalty starts after this many tokens
    return [max(-1.0, min(0.0, (start - length) / overlong_buffer)) for length in completion_tokens]


DEFAULT_REWARD_WEIGHTS: dict[str, float] = default_reward_weights()
