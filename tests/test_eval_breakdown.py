"""analysis/eval_breakdown.py: right answers by step band and the strict-format split."""

from __future__ import annotations

import pytest
from conftest import load_analysis


def row(index: int, correct: bool, strict: bool, arithmetic: float = 1.0) -> dict:
    rewards = {"strict_format": float(strict), "arithmetic_consistency": arithmetic}
    return {"problem_index": index, "correct": correct, "rewards": rewards}


def test_right_answers_by_step_band_and_strict_format_split():
    script = load_analysis("eval_breakdown")
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
    assert script.right_in_how_many([first, second]) == {1: 4}  # no problem right in both
    assert script.right_in_how_many([first, first, second]) == {1: 1, 2: 3}


def test_false_equations_count_solutions_and_their_right_answers():
    script = load_analysis("eval_breakdown")
    rows = [row(0, True, True, 0.5), row(1, False, True, 0.0), row(2, True, True, 1.0)]
    rows.append({"problem_index": 3, "correct": False, "rewards": {}})  # no such reward: none
    assert script.false_equations(rows) == (2, 1)


def test_missing_eval_folder_or_data_is_a_one_line_error(tmp_path, capsys):
    script = load_analysis("eval_breakdown")
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), str(tmp_path / "b"), "--data", str(data)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"eval_breakdown: {data}/train.jsonl: no such file (--data)\n"
    (data / "train.jsonl").write_text("")
    (data / "test.jsonl").write_text("")
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), str(tmp_path / "b"), "--data", str(data)])
    assert stop.value.code == 2
    assert f"{data}/test.jsonl: no problems found (empty file)" in capsys.readouterr().err
    line = '{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n'
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text(line)
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), str(tmp_path / "b"), "--data", str(data)])
    assert stop.value.code == 2
    assert f"{tmp_path}/a/samples.jsonl: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), "--data", str(data)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "eval_breakdown: give two or more eval folders\n"
