"""The calculator of the GSM8K paper (Cobbe et al., 2021), as a sampling switch.

When a completion's text ends in an arithmetic expression followed by "=" ("48 / 2 ="), the
sampler writes the exact result (" 24", spaced as the equation is) as the next tokens instead
of letting the model guess it. The expression is read and computed by the safe parser of
arithmetic.py (numbers, + - * /, parentheses; never `eval`). A 135M model's reasoning is often right where its arithmetic is
not, so this measures how much of its error is arithmetic.

Off by default (`sampling.calculator`, `smolgrpo eval --calculator`) and reported separately:
a model evaluated with it is a model plus a tool. In training, the inserted tokens are not the
policy's samples, so they are left out of the loss (`Rollout.forced_mask`); the tokens the model
writes after them are conditioned on them, as at test time.
"""

from __future__ import annotations

import re

from smolgrpo.rewards.arithmetic import value_before_trailing_equals

TAIL_TOKENS = 24  # how far back the expression before "=" is looked for
# The characters an expression is written with, read back from its "=" (for the result's style).
EXPRESSION_TAIL = re.compile(r"[\d\s.,$()+\-*/x×÷]*$")


def format_result(value: float) -> str:
    """24.0 -> "24", 2.5 -> "2.5", 1/3 -> "0.3333": what a worked solution would write."""
    if abs(value - round(value)) < 1e-9:
        return str(int(round(value)))
    return f"{value:.4f}".rstrip("0").rstrip(".")


def equals_token_ids(tokenizer) -> list[int]:
    """The ids of the tokens that write "=": only such a token can end an expression (or a
    tool call, tools.py), so the decode loop checks each step with one isin."""
    return sorted(
        index
        for index in tokenizer.get_vocab().values()
        if "=" in tokenizer.decode([index], skip_special_tokens=True)
    )


class Calculator:
    """Finds "expression =" at the end of a completion and gives the result's token ids."""

    tail_tokens = TAIL_TOKENS  # the decode loop hands `result_tokens` this many + 1 tokens

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.trigger_ids = equals_token_ids(tokenizer)

    def result_tokens(self, tail_ids: list[int]) -> list[int]:
        """Token ids of the result when the decoded tail ends in "expression =", else [].

        Written in the equation's style, as the model's own next tokens would be: "3 + 4 ="
        gets " 7", "3+4=" gets "7", "$3*4=" gets "$12" (GSM8K's solutions write money so)."""
        text = self.tokenizer.decode(tail_ids, skip_special_tokens=True)
        value = value_before_trailing_equals(text)
        if value is None or abs(value) >= 1e15:  # None also for a non-finite value
            return []
        result = format_result(value)
        before_equals = text.rstrip()[:-1]
        if "$" in EXPRESSION_TAIL.search(before_equals).group(0):  # the pattern always matches
            result = "$" + result
        if text == text.rstrip() and before_equals != before_equals.rstrip():
            result = " " + result
        return self.tokenizer.encode(result, add_special_tokens=False)
