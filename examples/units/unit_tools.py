"""The tool of docs/tools.md's worked example: conversions between made-up units.

    convert(6 quib to snib) =  ->  " 18"

No model can know what a quib is: the factors below exist only here, so the model's one way to
the answer is to call the tool (`sampling.tools: ['examples/units/unit_tools.py:convert']`).
The argument is plain text, parsed here; it is never evaluated. A malformed request or an
unknown unit raises, and the model reads the error (`error: ValueError: unknown unit ...`).
"""

from __future__ import annotations

import re

# How many zorbs one of each unit is.
ZORBS_PER_UNIT = {"zorb": 1, "snib": 4, "flink": 7, "quib": 12, "blort": 35, "garn": 60}
REQUEST = re.compile(r"^\s*(\d+(?:\.\d+)?)\s+([a-z]+)\s+(?:to|in)\s+([a-z]+)\s*$")


def unit(word: str) -> str:
    """'flinks' -> 'flink'; an unknown unit raises ValueError naming the known ones."""
    for name in (word, word.removesuffix("s")):
        if name in ZORBS_PER_UNIT:
            return name
    raise ValueError(f"unknown unit '{word}' (known: {', '.join(ZORBS_PER_UNIT)})")


def format_number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.4f}".rstrip("0")


def convert(arguments: str) -> str:
    """'6 quib to snib' -> '18'."""
    match = REQUEST.match(arguments.lower())
    if match is None:
        raise ValueError("expected 'AMOUNT UNIT to UNIT', e.g. '3 flink to zorb'")
    amount, source, target = float(match[1]), unit(match[2]), unit(match[3])
    return format_number(amount * ZORBS_PER_UNIT[source] / ZORBS_PER_UNIT[target])
