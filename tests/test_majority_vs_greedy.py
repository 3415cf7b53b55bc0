"""analysis/majority_vs_greedy.py: maj@k of a sampled eval paired with a greedy eval."""

from __future__ import annotations

import json

import pytest
from conftest import load_analysis


def sample(line: int, index: int, answer: str | None, correct: bool) -> dict:
    return {
        "origin": f"/data/gsm8k/test.jsonl:{line}",
        "problem_index": line - 1,
        "sample_index": index,
        "extracted_answer": answer,
        "correct": correct,
    }


def write(folder, records) -> None:
    folder.mkdir()
    lines = [json.dumps(r) for r in records]
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_majority_paired_with_greedy(tmp_path, capsys):
    script = load_analysis("majority_vs_greedy")
    sampled = [
        # line 1: 72 twice, 70 once -> the vote is 72, right
        *[sample(1, i, a, a == "72") for i, a in enumerate(["70", "72", "72.0"])],
        # line 2: a tie between 5 and 6 goes to the first seen (6, wrong)
        *[sample(2, i, a, a == "5") for i, a in enumerate(["6", None, "5"])],
        # line 3: no sample answers -> wrong
        *[sample(3, i, None, False) for i in range(3)],
    ]
    greedy = [sample(1, 0, "70", False), sample(2, 0, "5", True), sample(3, 0, "1", True)]
    greedy.append(sample(4, 0, "9", True))  # not in the sampled eval: left out of the pairing
    write(tmp_path / "maj", sampled)
    write(tmp_path / "greedy", greedy)
    assert script.majority_by_problem(script.by_problem(sampled)) == {
        "test.jsonl:1": True,
        "test.jsonl:2": False,
        "test.jsonl:3": False,
    }
    counts = script.paired_counts(
        script.majority_by_problem(script.by_problem(sampled)),
        script.paired.first_sample_correct(greedy),
    )
    assert counts == {
        "problems": 3,
        "first_right": 1,
        "second_right": 2,
        "both": 0,
        "only_first": 1,
        "only_second": 2,
    }
    assert script.main([str(tmp_path / "maj"), str(tmp_path / "greedy")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "3 problems held by both evals"
    assert out[1] == "maj@3:  1 right, 33.3% [6.1, 79.2]"
    assert out[2] == "greedy: 2 right, 66.7% [20.8, 93.9]"
    assert out[3] == "paired: 0 both, 1 only maj@3, 2 only greedy, McNemar p = 1"
    # one right sample on lines 1 and 2, none on line 3; different answers by value: 2 (72 and
    # 72.0 are one), 2 and 0
    assert script.spread(script.by_problem(sampled)) == ({1: 2}, 4 / 3, 2)
    assert out[4] == "problems by right samples (of 3), where any is right: {1: 2}"
    assert out[5] == "different answers a problem: mean 1.3, median 2"


def test_a_missing_or_damaged_eval_is_a_one_line_error(tmp_path, capsys):
    script = load_analysis("majority_vs_greedy")
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert stop.value.code == 2
    expected = f"majority_vs_greedy: {tmp_path}/a/samples.jsonl: no such file"
    assert capsys.readouterr().err.startswith(expected)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "samples.jsonl").write_text('{"correct": true}\n{oops\n')
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(
        f"majority_vs_greedy: {tmp_path}/a/samples.jsonl:2: not JSON"
    )
