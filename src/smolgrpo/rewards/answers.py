"""Reading the answer out of a completion and deciding whether it is right.

`extract_answer` takes the single `<answer>` block (several blocks, nested tags or none give
None); `parse_number` reads a number the way GSM8K writes one (ASCII digits only, commas in
thousands, no fractions); `answers_match` compares numerically. `is_correct` is the one
correctness decision, and `counts_as_correct` turns a correctness score (`score_answers`, or
one read from a log) into right or wrong: the correctness reward, eval, the report and the
paired tests all use them (or the records they produced), so training and evaluation never
disagree. `check_answers` runs a task's own check over a batch (a sandboxed one at once),
scoring a failed check 0 and saying how each check ended.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable

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


# The minus is only a sign when it does not follow a digit, so "10-3" yields "3", not "-3".
_LAST_NUMBER_RE = re.compile(
    r"(?:(?<![0-9])[-\u2212])?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?"
)


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


# The score of a right answer: a correctness score (the reward's, a task check's, or one read
# back from a log) means right only at full credit; partial credit is still wrong.
CORRECT = 1.0


def counts_as_correct(score: float) -> bool:
    """Whether a correctness score means the answer is right (NaN and partial credit: no)."""
    return score >= CORRECT


def is_correct(answer: str | None, gold: str | None, answer_check: Callable | None = None) -> bool:
    """The one correctness decision: `answer` (as `extract_answer` read it) against `gold`, by
    the task's `answer_check` (a check that fails is wrong) or else GSM8K's numeric match."""
    return counts_as_correct(score_answers([answer], [gold], answer_check).scores[0])


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


class AnswerChecks(list):
    """A task's answer check over a batch: a list of scores (what the correctness reward
    returns), and per answer how the check ended in `statuses`: "ok", "timeout" (stopped at its
    time limit, sandbox.py) or "error" (it raised, exited, crashed or was stopped); a check
    that did not end "ok" scored 0."""

    def __init__(self, scores=(), statuses=None):
        super().__init__(scores)
        self.statuses: list[str] = list(statuses or [])

    @property
    def scores(self) -> list[float]:
        return list(self)

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
        result.append(_clamp(value))
        result.statuses.append(status)
    return result


def score_answers(
    answers: list[str | None],
    gold_answers: list[str | None],
    answer_check: Callable[[str | None, str], float] | None = None,
) -> AnswerChecks:
    """A correctness score per answer (`CORRECT` is right): GSM8K's numeric match, or the task's
    check through `check_answers`, which scores like a reward (a failing check is 0 and
    counted, never the end of an eval)."""
    if answer_check is None:
        scores = [CORRECT if answers_match(a, g) else 0.0 for a, g in zip(answers, gold_answers)]
        return AnswerChecks(scores, ["ok"] * len(scores))
    return check_answers(answer_check, answers, gold_answers)
