"""Countdown's and 24's answer checks, in-process and without `eval`.

reasoning-gym checks both games with sympy's `parse_expr`, which `eval`s the answer (and hangs
on `9**9**9**9`). Their answers are arithmetic: numbers, `+ - * /` and parentheses, which this
module parses and evaluates itself, the way sympy would: integers and fractions exactly,
decimals in double precision, `x/0` sympy's complex infinity (`zoo`) and `0/0` its `nan`, with
Python's syntax (no implicit multiplication, `2(3)` is a call and fails; no leading zeros in an
integer; a line break only inside parentheses). Then the game's own rules, as in reasoning-gym's
`score_answer`:

* countdown: the expression's value (a float) within `np.isclose(value, target, atol=1e-6)` of
  the target and the integers written in it exactly the given numbers: 1.0; a parsed expression
  that misses either: 0.05; one that does not parse, or has no real value: 0.01.
* puzzle24: `int(value)` is 24 and four integers are written, each within the dataset's
  `min_value`..`max_value`: 1.0; else 0.01.

An answer with any other character (a letter, a quote, `**`, `//`, `==`, `%`, `_`) is not such
an expression and scores 0, where reasoning-gym would have evaluated it as Python; on every answer
over the alphabet above, the score is reasoning-gym's (tests/test_sandbox.py compares them).
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

ARITHMETIC_GAMES = ("countdown", "puzzle24")
MAX_DEPTH = 200  # Python's parser refuses deeper nesting ("too many nested parentheses")

_ALPHABET = re.compile(r"[0-9.+\-*/()= \t\n]*")
_TOKEN = re.compile(r"\s*(?:([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)|(.))", re.DOTALL)
_INTEGERS = re.compile(r"\b\d+\b")  # reasoning-gym's way of reading the numbers used


class _Invalid(Exception):
    """The text does not parse, or its value has no real number (sympy raised)."""


class _Special:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


ZOO, NAN = _Special("zoo"), _Special("nan")  # sympy's complex infinity and not-a-number


def is_arithmetic(text: str) -> bool:
    """Over the alphabet, and no power, floor division or comparison (sympy re-joins `* *`
    into `**`). A single `=` stays: in Python it can only be a syntax error here (`3 + 4 =`),
    which reasoning-gym scores as an unparsed answer."""
    if not _ALPHABET.fullmatch(text):
        return False
    joined = "".join(text.split())
    return not any(operator in joined for operator in ("**", "//", "=="))


def _tokens(text: str) -> list:
    """Numbers (Fraction exact, or float for a decimal) and operator characters; a line break
    outside parentheses ends a Python expression, so it fails here as it does there."""
    tokens, depth, position = [], 0, 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # only whitespace left
            break
        number, symbol = match.groups()
        start = match.start(1) if number is not None else match.start(2)
        if depth <= 0 and "\n" in text[position:start]:
            raise _Invalid
        if number is not None:
            if "." in number:
                tokens.append(("number", float(number)))
            elif len(number) > 1 and number[0] == "0" and number.strip("0"):
                raise _Invalid  # "05": Python refuses leading zeros in an integer
            else:
                tokens.append(("number", Fraction(int(number))))
        elif symbol in "+-*/()":
            depth += {"(": 1, ")": -1}.get(symbol, 0)
            tokens.append(("op", symbol))
        else:  # "." alone, or whitespace other than what the alphabet allows
            raise _Invalid
        position = match.end()
    return tokens


class _Parser:
    """expression = term (("+"|"-") term)*; term = unary (("*"|"/") unary)*;
    unary = ("+"|"-") unary | number | "(" expression ")"."""

    def __init__(self, tokens: list):
        self.tokens, self.position, self.depth = tokens, 0, 0

    def parse(self):
        value = self.expression()
        if self.position != len(self.tokens):
            raise _Invalid
        return value

    def peek(self):
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self):
        if self.position >= len(self.tokens):
            raise _Invalid
        self.position += 1
        return self.tokens[self.position - 1]

    def expression(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            operator = self.take()[1]
            right = self.term()
            value = _add(value, right if operator == "+" else _negate(right))
        return value

    def term(self):
        value = self.unary()
        while self.peek() in ("*", "/"):
            operator = self.take()[1]
            right = self.unary()
            value = _multiply(value, right) if operator == "*" else _divide(value, right)
        return value

    def unary(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Invalid
        try:
            kind, symbol = self.take()
            if kind == "number":
                return symbol
            if symbol in ("+", "-"):
                value = self.unary()
                return value if symbol == "+" else _negate(value)
            if symbol != "(":
                raise _Invalid
            value = self.expression()
            if self.take() != ("op", ")"):
                raise _Invalid
            return value
        finally:
            self.depth -= 1


def _is_zero(value) -> bool:
    return not isinstance(value, _Special) and value == 0


def _numeric(left, right, operation):
    if isinstance(left, float) or isinstance(right, float):  # a decimal: double precision
        return operation(_to_float(left), _to_float(right))
    return operation(left, right)


def _negate(value):
    return value if isinstance(value, _Special) else -value


def _add(left, right):
    if NAN in (left, right) or (left is ZOO and right is ZOO):
        return NAN
    if ZOO in (left, right):
        return ZOO
    return _numeric(left, right, lambda a, b: a + b)


def _multiply(left, right):
    if NAN in (left, right):
        return NAN
    if ZOO in (left, right):
        return NAN if _is_zero(left) or _is_zero(right) else ZOO
    return _numeric(left, right, lambda a, b: a * b)


def _divide(left, right):
    if NAN in (left, right):
        return NAN
    if right is ZOO:
        return NAN if left is ZOO else Fraction(0)
    if left is ZOO:
        return ZOO
    if _is_zero(right):
        return NAN if _is_zero(left) else ZOO
    return _numeric(left, right, lambda a, b: a / b)


def _to_float(value) -> float:
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except OverflowError:  # sympy gives inf for a value past the largest float
        return math.copysign(math.inf, value)


def evaluate(text: str):
    """The value sympy's parse_expr would give `text` (Fraction, float, ZOO or NAN), or raise
    _Invalid. `text` must pass `is_arithmetic`."""
    return _Parser(_tokens(text.strip())).parse()


def _isclose(value: float, target: float) -> bool:
    """numpy.isclose(value, target, rtol=1e-5, atol=1e-6) for a finite target."""
    if math.isnan(value) or math.isinf(value):
        return False
    return abs(value - target) <= 1e-6 + 1e-5 * abs(target)


def score_countdown(answer: str, entry: dict) -> float:
    if not is_arithmetic(answer):
        return 0.0
    if not answer.strip():
        return 0.01
    try:
        value = evaluate(answer)
    except _Invalid:
        return 0.01
    if value is ZOO:  # float(zoo) raises in reasoning-gym
        return 0.01
    value = math.nan if value is NAN else _to_float(value)
    used = [int(number) for number in _INTEGERS.findall(answer)]
    if sorted(used) != sorted(entry["metadata"]["numbers"]):
        return 0.05
    return 1.0 if _isclose(value, float(entry["metadata"]["target"])) else 0.05


def score_puzzle24(answer: str, entry: dict, min_value: int, max_value: int) -> float:
    if not is_arithmetic(answer):
        return 0.0
    try:
        value = evaluate(answer)
    except _Invalid:
        return 0.01
    if isinstance(value, _Special):  # int(zoo), int(nan) raise
        return 0.01
    if isinstance(value, float) and not math.isfinite(value):
        return 0.01
    used = [int(number) for number in _INTEGERS.findall(answer.strip())]
    if len(used) != 4 or any(n > max_value or n < min_value for n in used):
        return 0.01
    return 1.0 if int(value) == 24 else 0.01


def arithmetic_check(name: str, dataset):
    """`(answer or None, gold JSON) -> score` for one of ARITHMETIC_GAMES; `dataset` (built in
    this process, no answer involved) gives puzzle24 its number range."""
    if name == "countdown":

        def check(answer: str | None, gold: str) -> float:
            return 0.0 if answer is None else score_countdown(answer, json.loads(gold))

    else:
        low, high = dataset.config.min_value, dataset.config.max_value

        def check(answer: str | None, gold: str) -> float:
            return 0.0 if answer is None else score_puzzle24(answer, json.loads(gold), low, high)

    return check
