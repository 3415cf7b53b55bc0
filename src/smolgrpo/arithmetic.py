"""Safe arithmetic for the rewards: parse `12 * 5 = 60` in model text and check it, never `eval`.

`check_equations` finds each `expression = number` in a text and says whether it holds;
`check_grounded_equations` also asks that the chain start from the problem's own numbers, so
true but irrelevant equations (`8 + 2 = 10` pasted anywhere) cannot be farmed. Both run in
linear time with bounded work per equation: inputs are the policy's output, and hostile.
"""

from __future__ import annotations

import math
import re

# Bounds that keep the arithmetic reward cheap on adversarially long completions.
ARITHMETIC_SCAN_CHARS = 20_000
MAX_EQUATIONS = 50
MAX_EQUALS_SIGNS = 200
MAX_EXPRESSION_TOKENS = 20
MAX_NUMBER_DIGITS = 15

_ARITHMETIC_TOKEN_RE = re.compile(
    r"(?P<number>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?)"
    r"|(?P<operator>[-+*/\u00d7\u00f7\u2212])"
    r"|(?P<paren>[()])"
    r"|(?P<equals>=)"
    r"|(?P<blank>[ \t$]+)"
    r"|(?P<word>[A-Za-z_]+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_OPERATOR_SYMBOLS = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-"}
_EXPRESSION_KINDS = ("number", "operator", "paren")


class _ParseError(Exception):
    pass


class _ExpressionParser:
    """Recursive-descent evaluator for + - * / and parentheses over a short token list.

    Grammar: expression = term (("+"|"-") term)*; term = unary (("*"|"/") unary | "(" ...)*;
    unary = ("+"|"-") unary | primary; primary = number | "(" expression ")". A number directly
    followed by "(" is implicit multiplication, as in "2(3 + 4)". Division by zero yields NaN so
    the equation compares false. Inputs are at most MAX_EXPRESSION_TOKENS long, which bounds the
    recursion depth.
    """

    def __init__(self, tokens: tuple[tuple[str, str, float], ...]) -> None:
        self.tokens = tokens
        self.position = 0
        self.binary_operators = 0

    def parse(self) -> tuple[float, int] | None:
        try:
            value = self._expression()
        except _ParseError:
            return None
        return (value, self.binary_operators) if self.position == len(self.tokens) else None

    def _peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def _take(self) -> tuple[str, str, float]:
        if self.position >= len(self.tokens):
            raise _ParseError
        self.position += 1
        return self.tokens[self.position - 1]

    def _expression(self) -> float:
        value = self._term()
        while self._peek() in ("+", "-"):
            operator = self._take()[1]
            right = self._term()
            self.binary_operators += 1
            value = value + right if operator == "+" else value - right
        return value

    def _term(self) -> float:
        value = self._unary()
        while self._peek() in ("*", "/", "("):
            operator = "*" if self._peek() == "(" else self._take()[1]
            right = self._unary()
            self.binary_operators += 1
            if operator == "*":
                value = value * right
            else:
                value = value / right if right != 0 else math.nan
        return value

    def _unary(self) -> float:
        if self._peek() in ("+", "-"):
            return -self._unary() if self._take()[1] == "-" else self._unary()
        return self._primary()

    def _primary(self) -> float:
        kind, symbol, value = self._take()
        if kind == "number":
            return value
        if symbol != "(":
            raise _ParseError
        inner = self._expression()
        if self._take()[1] != ")":
            raise _ParseError
        return inner


def _tokenize_arithmetic(text: str) -> list[tuple[str, str, float]]:
    """Turn text into (kind, symbol, value) tokens; anything non-arithmetic becomes a break."""
    tokens: list[tuple[str, str, float]] = []
    for match in _ARITHMETIC_TOKEN_RE.finditer(text):
        kind = match.lastgroup
        symbol = match.group(0)
        if kind == "blank":
            continue  # spaces and "$" may sit inside an equation: "$12 * 5 = $60"
        if kind == "number":
            digits = symbol.replace(",", "").replace(".", "")
            if len(digits) > MAX_NUMBER_DIGITS:
                tokens.append(("break", "", 0.0))
                continue
            symbol = symbol.replace(",", "")
            tokens.append(("number", symbol, float(symbol)))
        elif kind == "operator":
            tokens.append(("operator", _OPERATOR_SYMBOLS.get(symbol, symbol), 0.0))
        elif kind == "paren" or kind == "equals":
            tokens.append((kind, symbol, 0.0))
        else:
            # A lone "x" means times only right after a number or ")"; otherwise it is a word.
            follows_operand = bool(tokens) and (tokens[-1][0] == "number" or tokens[-1][1] == ")")
            is_times = symbol in ("x", "X") and follows_operand
            tokens.append(("operator", "*", 0.0) if is_times else ("break", "", 0.0))
    return tokens


def _number_after(tokens: list[tuple[str, str, float]], index: int) -> float | None:
    sign = 1.0
    if index < len(tokens) and tokens[index][0] == "operator" and tokens[index][1] in ("+", "-"):
        sign = -1.0 if tokens[index][1] == "-" else 1.0
        index += 1
    if index < len(tokens) and tokens[index][0] == "number":
        return sign * tokens[index][2]
    return None


def _expression_before(
    tokens: list[tuple[str, str, float]], equals_index: int, cache: dict
) -> tuple[tuple[str, ...], float] | None:
    """Longest parseable, non-trivial expression ending right before the '=' at equals_index."""
    start, lowest_start = equals_index, max(0, equals_index - MAX_EXPRESSION_TOKENS)
    while start > lowest_start and tokens[start - 1][0] in _EXPRESSION_KINDS:
        start -= 1
    window = tuple(tokens[start:equals_index])
    if window in cache:
        return cache[window]
    result = None
    # Leading junk ("5) 3 + 4") is dropped by trying ever shorter suffixes.
    for offset in range(len(window)):
        parsed = _ExpressionParser(window[offset:]).parse()
        if parsed is not None:
            value, binary_operators = parsed
            if binary_operators > 0:  # "2 = 2" states nothing
                result = (tuple(token[1] for token in window[offset:]), value)
            break
    cache[window] = result
    return result


def _values_close(computed: float, stated: float) -> bool:
    if not math.isfinite(computed):
        return False
    difference = abs(computed - stated)
    return difference <= 0.01 or difference <= 1e-4 * abs(stated)


def distinct_equations(text: str):
    """Yield (expression symbols, computed value, stated value) for each distinct, non-trivial
    equation in ``text``, in order of appearance, at most MAX_EQUATIONS of them.

    Each '=' compares the longest arithmetic expression right before it (stopping at words,
    punctuation, newlines or a previous '=') with the number right after it. So a chain
    ``2 + 3 = 5 + 1 = 6`` yields two equations, ``2 + 3 = 5`` and ``5 + 1 = 6``.
    """
    tokens = _tokenize_arithmetic(text)
    seen: set[tuple] = set()
    cache: dict = {}
    equals_seen = 0
    for index, token in enumerate(tokens):
        if token[0] != "equals":
            continue
        equals_seen += 1
        if equals_seen > MAX_EQUALS_SIGNS or len(seen) >= MAX_EQUATIONS:
            return
        stated = _number_after(tokens, index + 1)
        left = _expression_before(tokens, index, cache) if stated is not None else None
        if left is None or (left[0], stated) in seen:
            continue
        seen.add((left[0], stated))
        yield left[0], left[1], stated


def check_equations(text: str) -> list[bool]:
    """Whether each distinct, non-trivial equation in ``text`` holds (see distinct_equations)."""
    return [_values_close(computed, stated) for _, computed, stated in distinct_equations(text)]


# Operands a solution may use without finding them in the problem ("half" is / 2, percent / 100),
# but only beside an operand that *is* grounded: `2 * 2 = 4` alone stays ungrounded.
GROUNDING_CONSTANTS = frozenset({1.0, 2.0, 100.0})


def _key(value: float) -> float:
    return round(value, 6)


def question_numbers(question: str) -> set[float]:
    """The numbers written in digits in a problem statement (`1,200` is 1200)."""
    return {
        _key(value)
        for kind, _, value in _tokenize_arithmetic(question[:ARITHMETIC_SCAN_CHARS])
        if kind == "number"
    }


def check_grounded_equations(text: str, question: str) -> list[bool]:
    """For each distinct non-trivial equation in order: it holds *and* is grounded.

    Grounded: every operand is a number of the problem, the result of an earlier true grounded
    equation of the same text, or one of GROUNDING_CONSTANTS, and at least one operand is not
    such a constant. So a chain that starts from the problem's numbers scores, while `8 + 2 = 10`
    pasted anywhere (neither 8 nor 2 in the problem) counts as a failure."""
    available = question_numbers(question)
    outcomes: list[bool] = []
    for symbols, computed, stated in distinct_equations(text):
        operands = [_key(float(symbol)) for symbol in symbols if symbol not in "+-*/()"]
        grounded = all(o in available or o in GROUNDING_CONSTANTS for o in operands) and any(
            o in available for o in operands
        )
        holds = grounded and _values_close(computed, stated)
        if holds:
            available.add(_key(stated))
        outcomes.append(holds)
    return outcomes


def value_before_trailing_equals(text: str) -> float | None:
    """The value of the arithmetic expression that `text` ends with, followed by "=" and
    nothing else (spaces aside): "so 48 / 2 =" -> 24.0. None when the text does not end that
    way, the expression is a bare number ("x = 5 ="), or its value is not finite (the
    calculator of calculator.py)."""
    tokens = _tokenize_arithmetic(text[-200:])
    if not tokens or tokens[-1][0] != "equals":
        return None
    found = _expression_before(tokens, len(tokens) - 1, {})
    if found is None or not math.isfinite(found[1]):
        return None
    return found[1]
