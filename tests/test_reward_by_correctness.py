"""analysis/reward_by_correctness.py: a reward's scores on eval samples, right and wrong apart."""

from __future__ import annotations

import json

import pytest
from conftest import load_analysis

NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)


def response(reasoning: str, answer: str) -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def record(line: int, completion: str, correct: bool) -> dict:
    return {
        "origin": f"../data/test.jsonl:{line}",
        "problem_index": line - 1,
        "sample_index": 0,
        "completion": completion,
        "gold": "72",
        "correct": correct,
    }


def write_eval(folder, records) -> None:
    folder.mkdir()
    text = "".join(json.dumps(r) + "\n" for r in records)
    (folder / "samples.jsonl").write_text(text, encoding="utf-8")


def test_scores_right_and_wrong_answers_apart(tmp_path, capsys):
    script = load_analysis("reward_by_correctness")
    data = tmp_path / "data"
    data.mkdir()
    row = {"question": NATALIA, "answer": "48 / 2 = 24\n48 + 24 = 72\n#### 72"}
    (data / "test.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    write_eval(
        tmp_path / "eval",
        [
            record(1, response("48 / 2 = 24\n48 + 24 = 72", "72"), True),  # honest, right
            record(2, response("48 * 1 = 48", "48"), False),  # an identity: nothing
            record(2, response("48 / 2 = 24", "24"), False),  # a true step to a wrong answer
        ],
    )
    assert script.main([str(tmp_path / "eval"), "--data", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path / 'eval'}: grounded_arithmetic"
    assert out[1] == "  right answers: 1 samples, mean 1.000, 100.0% at the maximum"
    assert out[2] == "  wrong answers: 2 samples, mean 0.500, 50.0% at the maximum"


def test_a_problem_missing_from_the_data_is_one_line_exit_2(tmp_path, capsys):
    script = load_analysis("reward_by_correctness")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/test.jsonl").write_text(
        json.dumps({"question": NATALIA, "answer": "#### 72"})
    )
    write_eval(tmp_path / "eval", [record(5, response("", "72"), True)])
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "eval"), "--data", str(tmp_path / "data")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        f"reward_by_correctness: {tmp_path / 'eval'}: problem test.jsonl:5 is not in "
        f"{tmp_path / 'data'}\n"
    )
