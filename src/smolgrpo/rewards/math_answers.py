"""The `math` answer check: symbolic equivalence with `math-verify`.

math-verify parses the answer with sympy, which is built on `eval` and has no time limit, so
tasks never call `check_math` in the training or eval process: they run it through the sandbox
(sandbox.py), which imports this module in its host process. A leaf module, so the host's
import stays light (no torch).
"""

from __future__ import annotations


def _as_latex(text: str) -> str:
    return text if "$" in text or "\\boxed" in text else f"${text}$"


def check_math(predicted: str | None, gold: str) -> float:
    """1.0 when math-verify finds `predicted` and `gold` equivalent (`1/2` and `\\frac{1}{2}`)."""
    from math_verify import parse, verify

    if predicted is None:
        return 0.0
    gold_parsed, predicted_parsed = parse(_as_latex(gold)), parse(_as_latex(predicted))
    if not gold_parsed or not predicted_parsed:
        return 0.0
    return 1.0 if verify(gold_parsed, predicted_parsed) else 0.0
