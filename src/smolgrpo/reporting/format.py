"""How report numbers are read and shown (metric series, terminal table, report.html, model
card), apart from report.py so that html.py and plots.py can use them without
importing report.py, which imports them."""

from __future__ import annotations

import math

EVAL_PREFIX = "eval/"
REWARD_PREFIX = "reward/"


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def format_value(metric: str, value) -> str:
    """Rates as percentages, everything else with a precision that suits its size."""
    if not is_number(value):
        return "—" if value is None else str(value)
    name = metric.split("/")[-1]
    rate = name.endswith("_rate") and name != "learning_rate"
    if (
        rate
        or name.startswith(("accuracy", "token_accuracy", "pass@", "maj@", "frac_"))
        or name == "clip_fraction"
    ):
        return f"{value:.1%}"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.3f}"


def window_headings(summary: dict, dash: str = "-") -> list[str]:
    """`steps 1-5`, `steps 16-20`; one heading when both windows hold the same steps."""
    spans = [summary["first_steps"], summary["last_steps"]]
    headings = [f"steps {start}{dash}{end}" for start, end in spans]
    return headings[:1] if summary.get("single_window") else headings


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that logged `key` as a finite number."""
    pairs = [(row["step"], row[key]) for row in rows if is_number(row.get(key))]
    return [step for step, _ in pairs], [float(value) for _, value in pairs]


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values: no lag-free trick, but no invented points."""
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def reward_components(rows: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update((key, None) for key in row if key.startswith(REWARD_PREFIX))
    return list(names)
