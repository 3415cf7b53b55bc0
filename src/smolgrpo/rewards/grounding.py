"""Grounded arithmetic: which equations of a solution are true steps built on the problem.

A step is an equation `expression = number`, read as a person writes it (arithmetic's
unit_equations: `16 feet/side * 3 sides = 48 feet`, `20% * 50 = 10`). Each gets one verdict,
in order of appearance:

* ``false``: the stated number is not the expression's value.
* ``trivial``: true, but it states nothing new: an identity or a restated operand (`x * 1`,
  `x / 1`, `x + 0`, `x - x`, `x / x`, any result equal to one of its operands).
* ``ungrounded``: true, but an operand is neither a number of the problem (in digits or as a
  word: `seven` is 7; `20%` also grounds 0.2), nor the result of an earlier grounded step, nor
  a constant (half, twice, a dozen; 60 minutes, 24 hours, 7 days, 52 weeks, 365 days, 100
  percent, 1000 grams...: GROUNDING_CONSTANTS); or every operand is such a constant (`2 * 2 =
  4` alone grounds nothing). `8 + 2 = 10` pasted into any solution is ungrounded.
* ``grounded``: true, non-trivial, every operand grounded. Its result grounds later steps.

The reward built on it (builtin.py) pays a solution whose final answer is the result of a
grounded step, so the answer is the end of a chain of true equations rooted in the problem.
Everything here is linear in the text with bounded work per equation (arithmetic.py's bounds).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from smolgrpo.rewards.arithmetic import (
    ARITHMETIC_SCAN_CHARS,
    _tokenize_arithmetic,
    _values_close,
    unit_equations,
)

# Operands a solution may use without finding them in the problem, but only beside an operand
# that is grounded (`2 * 2 = 4` alone grounds nothing): small counts and denominators 1 to 12,
# the units of time (14 days a fortnight, 24 hours, 28 to 31 days a month, 52 weeks, 60
# minutes, 365 days, 3600 seconds), of measure (16 ounces a pound, 36 inches a yard, 100
# percent or cents, 1000 grams) and the common fractions 0.1, 0.2, 0.25, 0.5, 0.75, 1.5.
GROUNDING_CONSTANTS = frozenset(
    {float(count) for count in range(1, 13)}
    | {14.0, 16.0, 24.0, 28.0, 30.0, 31.0, 36.0, 52.0, 60.0, 100.0, 365.0, 1000.0, 3600.0}
    | {0.1, 0.2, 0.25, 0.5, 0.75, 1.5}
)

# Number words of a problem statement and the numbers they ground. The words of a multiple
# or a fraction (half, twice, double, triple, a third, a quarter, a dozen) are not here: their
# numbers (2, 3, 4, 12, 0.5, 0.25) are GROUNDING_CONSTANTS, which ground a step only beside a
# number of the problem, so "half" cannot start `8 + 2 = 10` on its own.
NUMBER_WORDS: dict[str, float] = {
    **{
        word: float(value)
        for value, word in enumerate(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
        )
    },
    **{
        word: float(10 * tens)
        for tens, word in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)
    },
    "hundred": 100.0,
    "thousand": 1000.0,
    "million": 1_000_000.0,
}
_WORD_RE = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Step:
    """One distinct equation of a solution: its stated result and its verdict (module doc)."""

    verdict: str  # "grounded", "trivial", "ungrounded" or "false"
    value: float  # the number stated after "="
    derived: bool  # true and built on an earlier grounded step, or grounded itself


def _key(value: float) -> float:
    return round(value, 6)


@functools.lru_cache(maxsize=256)  # a group's completions share their question
def question_numbers(question: str) -> frozenset[float]:
    """The numbers a problem statement grounds: its digits (`1,200` is 1200), each of them
    divided by 100 (`20%` grounds 0.2), and its number words (NUMBER_WORDS)."""
    text = question[:ARITHMETIC_SCAN_CHARS]
    numbers = {_key(value) for kind, _, value in _tokenize_arithmetic(text) if kind == "number"}
    numbers |= {_key(number / 100) for number in numbers}
    numbers |= {
        NUMBER_WORDS[word] for word in _WORD_RE.findall(text.lower()) if word in NUMBER_WORDS
    }
    return frozenset(numbers)


def _is_trivial(symbols: tuple[str, ...], operands: list[float], stated: float) -> bool:
    """An identity or a restated operand: a result equal to one of its operands (`x * 1`,
    `x + 0`, `48 - 24 = 24`: nothing new is known after it), `x - x` or `x / x`."""
    if any(_values_close(operand, stated) for operand in operands):
        return True
    return len(operands) == 2 and operands[0] == operands[1] and ("-" in symbols or "/" in symbols)


def grounded_steps(text: str, question: str) -> list[Step]:
    """The verdict of each distinct equation of ``text``, in order (module doc)."""
    available = set(question_numbers(question))
    results: set[float] = set()  # the results of earlier grounded steps
    steps: list[Step] = []
    for symbols, values, stated, holds in unit_equations(text):
        operands = [_key(value) for value in values]
        grounded = all(o in available or o in GROUNDING_CONSTANTS for o in operands) and any(
            o in available for o in operands
        )
        if not holds:
            steps.append(Step("false", stated, derived=False))
        elif _is_trivial(symbols, operands, stated):
            # `12 - 6 = 6` or `3 / 3 = 1` after 4 * 3 = 12 ends a chain, earning nothing itself
            derived = grounded and any(o in results for o in operands)
            steps.append(Step("trivial", stated, derived=derived))
        elif grounded:
            available.add(_key(stated))
            results.add(_key(stated))
            steps.append(Step("grounded", stated, derived=True))
        else:
            steps.append(Step("ungrounded", stated, derived=False))
    return steps
