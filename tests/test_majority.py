"""maj@k (self-consistency) beside pass@k in `smolgrpo eval`'s metrics, and in `compare`."""

from __future__ import annotations

import json

import pytest
from _report_run import write_fake_eval

from smolgrpo.evaluation.evaluate import summarize, wilson_interval
from smolgrpo.evaluation.majority import majority_correct, majority_record
from smolgrpo.reporting.compare import write_compare


def record(problem: int, sample: int, answer: str | None, gold: str) -> dict:
    correct = answer is not None and answer.strip("$ ").rstrip("0").rstrip(".") == gold
    return {
        "problem_index": problem,
        "origin": f"test:{problem}",
        "sample_index": sample,
        "extracted_answer": answer,
        "correct": correct,
        "correct_last_number": correct,
        "completion_tokens": 10,
        "truncated": False,
        "rewards": {"strict_format": 1.0},
        "total_reward": float(correct),
    }


def problem(index: int, answers: list[str | None], gold: str) -> list[dict]:
    return [record(index, sample, answer, gold) for sample, answer in enumerate(answers)]


RECORDS = (
    problem(0, ["72", "72.0", "$72", "70"], "72")  # 72 wins 3 to 1, however written
    + problem(1, ["5", "6", "6", "5"], "5")  # tie 2-2: 5 came first, and is right
    + problem(2, ["6", "5", "5", "6"], "5")  # tie 2-2: 6 came first, wrong (pass@4 right)
    + problem(3, [None, None, "9", None], "9")  # only one sample answered: it decides
    + problem(4, [None, None, None, None], "1")  # no answer: wrong
)


def test_majority_vote_by_value_with_ties_to_the_first_answer():
    assert majority_record(problem(0, ["72", "72.0", "$72", "70"], "72"))["sample_index"] == 0
    assert majority_record(problem(1, ["8", "9", "9"], "9"))["extracted_answer"] == "9"
    assert majority_record(problem(1, [None, None], "9")) is None
    assert majority_correct(RECORDS) == [True, True, False, True, False]


def test_summarize_reports_maj_at_k_beside_pass_at_k_with_intervals():
    shuffled = RECORDS[::-1]  # record order does not matter: samples sort by sample_index
    metrics = summarize(shuffled, num_samples=4)
    assert metrics["maj@4"] == pytest.approx(3 / 5)
    assert metrics["maj@4_ci95"] == pytest.approx(list(wilson_interval(3, 5)))
    assert metrics["pass@4"] == pytest.approx(4 / 5)  # problem 2 has a right sample
    assert metrics["pass@4_ci95"] == pytest.approx(list(wilson_interval(4, 5)))
    assert metrics["pass@1"] == pytest.approx(metrics["accuracy"])
    assert "maj@1" not in summarize(RECORDS[:4], num_samples=1)  # one sample: no vote


def test_compare_shows_maj_at_k_with_its_interval(tmp_path):
    folder = tmp_path / "eval-k8"
    metrics = write_fake_eval(folder, accuracy=0.05)
    metrics.update({"maj@8": 0.08, "maj@8_ci95": list(wilson_interval(32, 400))})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    _, _, _, written = write_compare([folder], tmp_path / "out")
    assert "| eval maj@8 | 8.0% [5.7, 11.1] |" in written["md"].read_text()
    document = json.loads(written["json"].read_text())
    row = next(r for r in document["rows"] if r["metric"] == "eval maj@8")
    assert row["ci95"][0] == pytest.approx(list(wilson_interval(32, 400)))
