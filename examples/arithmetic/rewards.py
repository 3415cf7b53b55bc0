"""A user reward for the arithmetic example: partial credit for a numeric answer that is close.

Correctness gives 1 only for the exact result, so while a model is still wrong on every sample
of a group, that group teaches nothing. `closeness` scores how near the `<answer>` number is,
`1 - |answer - result| / max(|result|, 1)` floored at 0, so an answer off by one beats one off
by fifty. It follows smolgrpo's reward contract:
`fn(completions, answers, **fields) -> one finite float per completion`.
"""

from __future__ import annotations

import re

_ANSWER = re.compile(r"<answer>\s*(-?\d+(?:\.\d+)?)\s*</answer>")


def closeness(completions: list[str], answers: list[str], **fields) -> list[float]:
    scores = []
    for completion, answer in zip(completions, answers, strict=True):
        found = _ANSWER.findall(completion)
        if len(found) != 1:  # no answer, or several to choose from: no credit
            scores.append(0.0)
            continue
        gold = float(answer)
        scores.append(max(0.0, 1.0 - abs(float(found[0]) - gold) / max(abs(gold), 1.0)))
    return scores
