"""Reward functions that score GSM8K completions for GRPO training.

A completion is the model's full response text and should look like::

    <reasoning>
    12 * 5 = 60, 60 - 8 = 52
    </reasoning>
    <answer>
    52
    </answer>

Each reward function takes ``(completions, gold_answers)`` and returns one float in [0, 1] per
completion. ``score_completions`` combines them with weights into the scalar GRPO reward.

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
* The correctness reward and the evaluator share ``extract_answer`` and ``answers_match`` so the
  training signal and the reported accuracy can never disagree.
* ``DEFAULT_REWARD_WEIGHTS``: correctness dominates. The format pieces give partial credit so a
  base model, which rarely writes the tags, still gets a non-zero and varied reward within a
  group (GRPO learns nothing from a group with identical rewards). Arithmetic consistency is
  weighted low because it is easy to farm with trivially true equations.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smolgrpo.arithmetic import ARITHMETIC_SCAN_CHARS, check_equations
from smolgrpo.grounding import grounded_steps
from smolgrpo.reward_plugins import is_plugin, score_plugin

REASONING_OPEN = "<reasoning>"
REASONING_CLOSE = "</reasoning>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
ALL_TAGS = (REASONING_OPEN, REASONING_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

MINUS_SIGNS = ("-", "\u2212")

# A number inside an answer: optional sign and dollar, digits with optional commas, optional
# decimals; or a bare ".5". Comma placement is validated afterwards so "72,73" can be rejected.
_ANSWER_NUMBER_RE = re.compile(r"([-+\u2212])?\$?(?:([0-9][0-9,]*)(\.[0-9]+)?|(\.[0-9]+))")
_THOUSANDS_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+")
_INTEGER_ANSWER_RE = re.compile(r"[-+\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)")
# The minus is only a sign when it does not follow a digit, so "10-3" yields "3", not "-3".
_LAST_NUMBER_RE = re.compile(
    r"(?:(?<![0-9])[-\u2212])?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?"
)


# --------------------------------------------------------------------------- extraction


def extract_answer(text: str) -> str | None:
    """Return the stripped content of the single ``<answer>...</answer>`` block, else None.

    Policy: exactly one ``<answer>`` and exactly one ``</answer>`` must be present, opening tag
    first. Several answer blocks or nested tags give None (so the completion scores zero and a
    model cannot list several guesses). Empty or whitespace-only content also gives None.
    """
    if not isinstance(text, str):
        return None
    if text.count(ANSWER_OPEN) != 1 or text.count(ANSWER_CLOSE) != 1:
        return None
    content_start = text.find(ANSWER_OPEN) + len(ANSWER_OPEN)
    content_end = text.find(ANSWER_CLOSE)
    if content_end < content_start:
        return None
    return text[content_start:content_end].strip() or None


def extract_last_number(text: str) -> str | None:
    """Return the last ASCII number in ``text`` (fallback extractor for untrained models)."""
    if not isinstance(text, str):
        return None
    numbers = _LAST_NUMBER_RE.findall(text)  # the pattern has no capture groups
    return numbers[-1] if numbers else None


def _has_non_ascii_numeral(text: str) -> bool:
    # isnumeric() covers every Unicode digit, superscript, vulgar fraction and CJK numeral.
    return not text.isascii() and any(ch.isnumeric() for ch in text if not ch.isascii())


def parse_number(text: str | None) -> float | None:
    """Parse the single number in an answer string, else None.

    Accepts ``72``, ``72.0``, ``$72``, ``72 dollars``, ``1,000``, ``-3``, ``0.5``, ``.5``,
    ``72.`` and ``50%`` (read as 50). Returns None when the text holds no number, more than one
    number (``72, 73``, ``72 or 73``, ``3/4``, ``1e3``), badly placed commas (``72,73``), any
    non-ASCII numeral (look-alike digits are a known hack), or a value too large to be finite.
    """
    if not isinstance(text, str) or _has_non_ascii_numeral(text):
        return None
    # Two matches are enough to know the answer is ambiguous; no need to scan further.
    matches = list(itertools.islice(_ANSWER_NUMBER_RE.finditer(text), 2))
    if len(matches) != 1:
        return None
    sign, integer_part, decimals, bare_decimals = matches[0].groups()
    if integer_part is not None:
        integer_part = integer_part.rstrip(",")  # "72, dollars" ends the number at the comma
        if "," in integer_part:
            if not _THOUSANDS_RE.fullmatch(integer_part):
                return None
            integer_part = integer_part.replace(",", "")
        value = float(integer_part + (decimals or ""))
    else:
        value = float("0" + bare_decimals)
    if sign in MINUS_SIGNS:
        value = -value
    return value if math.isfinite(value) else None


def answers_match(predicted: str | None, gold: str) -> bool:
    """True when both parse to numbers equal within ``1e-6 * max(1, |gold|)``."""
    predicted_value = parse_number(predicted)
    gold_value = parse_number(gold)
    if predicted_value is None or gold_value is None:
        return False
    return abs(predicted_value - gold_value) <= 1e-6 * max(1.0, abs(gold_value))


# --------------------------------------------------------------------------- per-completion scorers


def _score_correctness(completion: str, gold: str | None) -> float:
    return 1.0 if answers_match(extract_answer(completion), gold) else 0.0


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


# --------------------------------------------------------------------------- arithmetic


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


# --------------------------------------------------------------------------- public rewards


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


def _score_each(
    score_one: Callable[[str, str | None], float], completions: list[str], gold_answers: list[str]
) -> list[float]:
    """Apply score_one to each completion; any failure scores 0.0 instead of raising."""
    try:
        golds = list(gold_answers)
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


@dataclass
class AnswerChecks:
    """A task's answer check over a batch: a score per answer, and per answer how the check
    ended: "ok", "timeout" (stopped at its time limit, sandbox.py) or "error" (it raised,
    exited, crashed or was stopped); a check that did not end "ok" scored 0."""

    scores: list[float]
    statuses: list[str] = field(default_factory=list)

    @property
    def timeouts(self) -> int:
        return self.statuses.count("timeout")

    @property
    def errors(self) -> int:
        return self.statuses.count("error")


def check_answers(
    answer_check: Callable[[str | None, str], float],
    answers: list[str | None],
    gold_answers: list[str],
) -> AnswerChecks:
    """`answer_check` over a batch: a check with `check_batch` (a sandboxed third-party check,
    sandbox.py) gets the whole batch at once; any other is called per answer, in-process. A
    check that fails scores 0 and is counted; only KeyboardInterrupt goes through."""
    batch = getattr(answer_check, "check_batch", None)
    if batch is not None:
        outcomes = batch(list(answers), list(gold_answers))
        return AnswerChecks(
            [_clamp(float(outcome.score)) for outcome in outcomes],
            [
                outcome.status if outcome.status in ("timeout", "error") else "ok"
                for outcome in outcomes
            ],
        )
    result = AnswerChecks([])
    for answer, gold in zip(answers, gold_answers):
        try:
            value = float(answer_check(answer, gold))
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - SystemExit included: scored 0, counted
            value, status = 0.0, "error"
        else:
            status = "ok"
        result.scores.append(_clamp(value))
        result.statuses.append(status)
    return result


def correctness_reward(completions: list[str], gold_answers: list[str]) -> list[float]:
    """1.0 when the single <answer> block numerically matches the gold answer."""
    return _score_each(_score_correctness, completions, gold_answers)


def strict_format_reward(completions: list[str], gold_answers: list[str]) -> list[float]:
    """1.0 when the text is exactly one <reasoning> block then one non-empty <answer> block."""
    return _score_each(_score_strict_format, completions, gold_answers)


def soft_format_reward(completions: list[str], gold_answers: list[str]) -> list[float]:
    """1.0 when the first occurrences of the four tags appear in the right order."""
    return _score_each(_score_soft_format, completions, gold_answers)


def xml_count_reward(completions: list[str], gold_answers: list[str]) -> list[float]:
    """0.25 per tag present exactly once, minus 0.001 per character after </answer> (max 0.25)."""
    return _score_each(_score_xml_count, completions, gold_answers)


def integer_answer_reward(completions: list[str], gold_answers: list[str]) -> list[float]:
    """1.0 when the answer is a bare integer such as ``72``, ``-12`` or ``1,000``."""
    return _score_each(_score_integer_answer, completions, gold_answers)


def arithmetic_consistency_reward(completions: list[str], gold_answers: list[str]) -> list[float]:
    """Fraction of distinct, non-trivial equations in the reasoning that hold (0.0 if none)."""
    return _score_each(_score_arithmetic, completions, gold_answers)


def grounded_arithmetic_reward(
    completions: list[str], gold_answers: list[str], questions: list[str] | None = None
) -> list[float]:
    """0 unless the answer ends a chain of true equations rooted in the problem (grounding.py);
    then the share of grounded steps among grounded and false ones. 0.0 without the questions."""
    return _score_each(_score_grounded_arithmetic, completions, questions or [])


# Rewards that also read the problem statement (score_completions passes `questions=`).
QUESTION_REWARDS = frozenset({"grounded_arithmetic"})

REWARD_FUNCTIONS: dict[str, Callable[..., list[float]]] = {
    "correctness": correctness_reward,
    "strict_format": strict_format_reward,
    "soft_format": soft_format_reward,
    "xml_count": xml_count_reward,
    "integer_answer": integer_answer_reward,
    "arithmetic_consistency": arithmetic_consistency_reward,
    "grounded_arithmetic": grounded_arithmetic_reward,
}

DEFAULT_REWARD_WEIGHTS: dict[str, float] = {
    "correctness": 2.0,
    "strict_format": 0.5,
    "soft_format": 0.25,
    "xml_count": 0.25,
    "integer_answer": 0.25,
    "arithmetic_consistency": 0.25,
}


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
