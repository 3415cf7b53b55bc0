"""benchmarks/eval_breakdown.py: right answers by step band and the strict-format split."""

from __future__ import annotations

from conftest import load_benchmark


def row(index: int, correct: bool, strict: bool) -> dict:
    return {"problem_index": index, "correct": correct, "rewards": {"strict_format": float(strict)}}


def test_right_answers_by_step_band_and_strict_format_split():
    script = load_benchmark("eval_breakdown")
    assert [script.step_band(s) for s in (None, 1, 2, 3, 4, 9)] == [
        "1-2",
        "1-2",
        "1-2",
        "3",
        "4+",
        "4+",
    ]
    steps = [1, 3, 5, 2]
    first = [row(0, True, True), row(1, True, False), row(2, False, True), row(3, True, True)]
    second = [row(0, False, True), row(1, False, True), row(2, True, True), row(3, False, False)]
    assert script.right_by_band(first, steps) == {"1-2": 2, "3": 1, "4+": 0}
    assert script.right_by_band(second, steps) == {"1-2": 0, "3": 0, "4+": 1}
    # strict in first only: problem 3; in second only: problem 1
    assert script.strict_only(first, second) == (1, 1)
    assert script.strict_only(first, first) == (0, 0)
