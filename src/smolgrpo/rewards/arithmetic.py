"""Safe arithmetic for the rewards: parse `12 * 5 = 60` in model text and check it, never `eval`.

`check_equations` finds each `expression = number` in a text and says whether it holds;
`unit_equations` reads a worked solution as a person writes it (units, percents, fractions)
for grounding.py, which asks that a chain start from the problem's own numbers. All run in
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

_NUMBER_PATTERN = r"[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?"
_TOKEN_PATTERN = (
    r"(?P<number>{number})"
    r"|(?P<operator>[-+*/\u00d7\u00f7\u2212\u2013])"
    r"|(?P<paren>[()])"
    r"|(?P<equals>=)"
    r"|(?P<blank>[ \t$\u00a3\u20ac]+)"
    r"|(?P<word>[A-Za-z_]+)"
    r"|(?P<other>.)"
)
_ARITHMETIC_TOKEN_RE = re.compile(_TOKEN_PATTERN.format(number=_NUMBER_PATTERN), re.DOTALL)
# Reading units also reads a bare decimal such as the ".30" of "70(.30)".
_UNIT_TOKEN_RE = re.compile(
    _TOKEN_PATTERN.format(number=_NUMBER_PATTERN + r"|(?<![0-9.])\.[0-9]+"), re.DOTALL
)
# At most this many unit words in a row are skipped after a number ("16 feet/side").
MAX_UNIT_WORDS = 8
# Words that are arithmetic in a worked solution: "6 times 1/4 equals 1.5".
_OPERATOR_WORDS = {
    "times": ("operator", "*"),
    "plus": ("operator", "+"),
    "minus": ("operator", "-"),
    "equals": ("equals", "="),
}
_OPERATOR_SYMBOLS = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-"}
_EXPRESSION_KINDS = ("number", "operator", "paren")
_SYNTAX = frozenset("+-*/()")
_OPERAND_KINDS = ("number", "paren")


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


def _tokenize_arithmetic(text: str, read_units: bool = False) -> list[tuple[str, str, float]]:
    """Turn text into (kind, symbol, value) tokens; anything non-arithmetic becomes a break
    (a word keeps its text as symbol, for _drop_units)."""
    tokens: list[tuple[str, str, float]] = []
    pattern = _UNIT_TOKEN_RE if read_units else _ARITHMETIC_TOKEN_RE
    for match in pattern.finditer(text):
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
            is_times = symbol in ("x", "X") and follows_operand and not read_units
            if is_times:
                tokens.append(("operator", "*", 0.0))
            else:
                tokens.append(("break", symbol if kind == "word" else symbol[:1], 0.0))
    return tokens


def _drop_units(tokens: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """Read `16 feet/side * 3 sides = 48 feet` as `16 * 3 = 48`: up to MAX_UNIT_WORDS words
    right after a number (or ")"), with any "/word" among them, are skipped; an "x" after them
    is a times sign; a number followed by "%" gets the symbol "20%" (unit_equations reads it
    both ways). Everything else stays as it was."""
    kept: list[tuple[str, str, float]] = []
    unit_words = 0  # words skipped since the last number; 0 when not inside a unit
    for index, token in enumerate(tokens):
        kind, symbol = token[0], token[1]
        if symbol not in ("/", "%") and (kind != "break" or not symbol[:1].isalpha()):
            # the common case first, kept cheap: the input is hostile
            if unit_words and (kind == "number" or symbol == "("):
                kept.append(("break", "", 0.0))  # "80% there because (8 / 10)": no product
            kept.append(token)
            unit_words = 0
            continue
        after_operand = bool(kept) and (kept[-1][0] == "number" or kept[-1][1] == ")")
        is_word = symbol[:1].isalpha()
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "", 0.0)
        if is_word and symbol in ("x", "X") and after_operand and following[0] in _OPERAND_KINDS:
            kept.append(("operator", "*", 0.0))
            unit_words = 0
        elif is_word and symbol.lower() in _OPERATOR_WORDS:
            kept.append((*_OPERATOR_WORDS[symbol.lower()], 0.0))
            unit_words = 0
        elif is_word and len(symbol) == 1 and symbol not in ("a", "A"):
            kept.append(token)  # a variable: `6x + 12 = 108` is algebra, x no unit
            unit_words = 0
        elif is_word and after_operand and unit_words < MAX_UNIT_WORDS:
            unit_words += 1
        elif (
            symbol == "/"
            and after_operand
            and following[0] == "break"
            and following[1][:1].isalpha()
        ):
            unit_words = max(unit_words, 1)  # "per": "$18/hour" is 18
        elif symbol == "%" and kept and kept[-1][0] == "number" and not unit_words:
            kept[-1] = ("number", kept[-1][1] + "%", kept[-1][2])
        else:
            kept.append(token)
            unit_words = 0
    return kept


def _number_after(tokens: list[tuple[str, str, float]], index: int) -> float | None:
    sign = 1.0
    if index < len(tokens) and tokens[index][0] == "operator" and tokens[index][1] in ("+", "-"):
        sign = -1.0 if tokens[index][1] == "-" else 1.0
        index += 1
    if index < len(tokens) and tokens[index][0] == "number":
        return sign * tokens[index][2]
    return None


def _cut_short(tokens: list[tuple[str, str, float]], start: int, lowest_start: int) -> bool:
    """Whether the expression starting at ``start`` began earlier: it runs past the token
    limit, or opens with an operator right after a word (`X - 2`, `X*3/4`: algebra)."""
    if start == 0:
        return False
    before = tokens[start - 1]
    if start == lowest_start and before[0] in _EXPRESSION_KINDS:
        return True
    return tokens[start][0] == "operator" and before[0] == "break" and before[1][:1].isalpha()


def _expression_before(
    tokens: list[tuple[str, str, float]], equals_index: int, cache: dict, strict: bool = False
) -> tuple[tuple[str, ...], float] | None:
    """Longest parseable, non-trivial expression ending right before the '=' at equals_index.

    ``strict`` (worked solutions, unit_equations): None when the expression began earlier
    (_cut_short) or only parses after dropping an operator or a parenthesis: in
    `(X-2)*9/2 = 63`, `9/2` is not what was stated equal to 63."""
    start, lowest_start = equals_index, max(0, equals_index - MAX_EXPRESSION_TOKENS)
    while start > lowest_start and tokens[start - 1][0] in _EXPRESSION_KINDS:
        start -= 1
    if strict and _cut_short(tokens, start, lowest_start):
        return None
    window = tuple(tokens[start:equals_index])
    if window in cache:
        return cache[window]
    result = None
    # Leading junk ("5) 3 + 4") is dropped by trying ever shorter suffixes.
    for offset in range(len(window)):
        if strict and offset > 0 and window[offset - 1][0] != "number":
            break
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


def _equations(tokens: list[tuple[str, str, float]], strict: bool = False):
    """(index of the "=", expression symbols, computed value, stated value) of each distinct
    non-trivial equation among ``tokens`` (see distinct_equations)."""
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
        left = _expression_before(tokens, index, cache, strict) if stated is not None else None
        if left is None or (left[0], stated) in seen:
            continue
        seen.add((left[0], stated))
        yield index, left[0], left[1], stated


def distinct_equations(text: str):
    """Yield (expression symbols, computed value, stated value) for each distinct, non-trivial
    equation in ``text``, in order of appearance, at most MAX_EQUATIONS of them.

    Each '=' compares the longest arithmetic expression right before it (stopping at words,
    punctuation, newlines or a previous '=') with the number right after it. So a chain
    ``2 + 3 = 5 + 1 = 6`` yields two equations, ``2 + 3 = 5`` and ``5 + 1 = 6``.
    """
    for _, symbols, computed, stated in _equations(_tokenize_arithmetic(text)):
        yield symbols, computed, stated


def _fraction_after(tokens: list[tuple[str, str, float]], index: int) -> float | None:
    """The value of a fraction `a / b` starting at ``index`` and not continued by another
    operator or a parenthesis, else None."""
    found = tokens[index : index + 4]
    if len(found) < 3 or [token[0] for token in found[:3]] != ["number", "operator", "number"]:
        return None
    if (
        found[1][1] != "/"
        or found[2][2] == 0
        or (len(found) == 4 and found[3][0] not in ("break", "equals"))
    ):
        return None
    return found[0][2] / found[2][2]


def unit_equations(text: str):
    """Yield (expression symbols, operand values, stated value, holds) for each distinct
    equation of a worked solution, read as a person writes it: unit words are read through
    (`16 feet/side * 3 sides = 48 feet`, see _drop_units) and a percent holds read as written
    (`100% - 20% = 80%`) or as a fraction (`20% * 50 = 10`), a stated fraction as a number or
    as its value (`1/2 * 1/2 = 1/4`). Operands are as written (20 for
    `20%`); at most MAX_EQUATIONS equations, in linear time like distinct_equations."""
    tokens = _drop_units(_tokenize_arithmetic(text, read_units=True))
    as_fractions = None  # built on the first percent seen
    cache: dict = {}
    for index, symbols, computed, stated in _equations(tokens, strict=True):
        holds = _values_close(computed, stated)
        stated_tokens = [token[1] for token in tokens[index + 1 : index + 3]]
        if not holds and any(symbol.endswith("%") for symbol in (*stated_tokens, *symbols)):
            if as_fractions is None:
                as_fractions = [
                    (kind, symbol, value / 100 if symbol.endswith("%") else value)
                    for kind, symbol, value in tokens
                ]
            left = _expression_before(as_fractions, index, cache, strict=True)
            right = _number_after(as_fractions, index + 1)
            holds = left is not None and right is not None and _values_close(left[1], right)
        fraction = None if holds else _fraction_after(tokens, index + 1)
        if fraction is not None and _values_close(computed, fraction):
            holds, stated = True, fraction  # `1/2 * 1/2 = 1/4`
        operands = [float(symbol.rstrip("%")) for symbol in symbols if symbol not in _SYNTAX]
        yield symbols, operands, stated, holds


def check_equations(text: str) -> list[bool]:
    """Whether each distinct, non-trivial equation in ``text`` holds (see distinct_equations)."""
    return [_values_close(computed, stated) for _, computed, stated in distinct_equations(text)]


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
