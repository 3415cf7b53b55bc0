"""paired.py: the exact McNemar test against hand computations, and compare's paired lines."""

from __future__ import annotations

import json
import math

import pytest
from _report_run import write_fake_eval

from smolgrpo.errors import SmolGRPOError
from smolgrpo.evaluation.paired import (
    correct_by_problem,
    format_p,
    mcnemar_exact,
    paired_comparison,
    read_samples,
)
from smolgrpo.reporting.compare import write_compare


def test_mcnemar_exact_against_hand_computations():
    # 0 vs 5 discordant: 2 * (1/2)^5
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    # 1 vs 4: 2 * (C(5,0) + C(5,1)) / 32 = 12/32
    assert mcnemar_exact(1, 4) == pytest.approx(12 / 32)
    # a tie, and no disagreement at all: no evidence either way
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert format_p(mcnemar_exact(0, 12)) == "< 0.001"  # 2 / 4096
    assert format_p(mcnemar_exact(1, 4)) == "= 0.38"
    # the GPU chain's SFT -> GRPO split (README): 19 vs 36
    expected = 2 * sum(math.comb(55, k) for k in range(20)) / 2**55
    assert mcnemar_exact(19, 36) == pytest.approx(expected) and 0.029 < expected < 0.031


def write_samples(folder, correct: list[bool], origin: str = "/data/a/test.jsonl", extra=0):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"problem_index": i, "origin": f"{origin}:{i + 1}", "sample_index": 0, "correct": c}
        for i, c in enumerate(correct)
    ]
    # a second sample of problem 0 (pass@k evals) is not what pairs up
    rows += [{"problem_index": 0, "origin": f"{origin}:1", "sample_index": 1, "correct": True}]
    rows += [
        {"problem_index": 100 + i, "origin": f"{origin}:{101 + i}", "sample_index": 0, "correct": 1}
        for i in range(extra)
    ]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_paired_counts_pair_by_origin_file_and_line(tmp_path):
    #            p1     p2     p3     p4     p5     p6
    first = [True, True, False, False, False, True]
    second = [True, False, True, True, False, True]
    write_samples(tmp_path / "sft", first, origin="/tmp/g/data/test.jsonl")
    # another machine's path to the same file, and 2 problems the first eval did not score
    write_samples(tmp_path / "grpo", second, origin="../shared/gsm8k/test.jsonl", extra=2)
    assert correct_by_problem(tmp_path / "sft")["test.jsonl:1"] is True
    result = paired_comparison(("sft", tmp_path / "sft"), ("grpo", tmp_path / "grpo"))
    assert (result.problems, result.both_right, result.only_first) == (6, 2, 1)
    assert (result.only_second, result.neither) == (2, 1)
    assert result.p_value == pytest.approx(mcnemar_exact(1, 2)) == 1.0
    assert "2 both right, 1 only sft, 2 only grpo, 1 neither" in result.summary()


def test_paired_needs_samples_on_both_sides(tmp_path):
    write_samples(tmp_path / "a", [True])
    (tmp_path / "b").mkdir()
    assert paired_comparison(("a", tmp_path / "a"), ("b", tmp_path / "b")) is None
    (tmp_path / "b/samples.jsonl").write_text('{"correct": tru')  # damaged: no figures
    assert correct_by_problem(tmp_path / "b") is None


def test_read_samples_names_the_file_and_line_at_fault(tmp_path):
    with pytest.raises(SmolGRPOError, match=r"a/samples.jsonl: no such file"):
        read_samples(tmp_path / "a")
    (tmp_path / "a").mkdir()
    (tmp_path / "a/samples.jsonl").write_text('{"correct": true}\n\n{"correct": tru\n')
    with pytest.raises(SmolGRPOError, match=r"a/samples.jsonl:3: not JSON"):
        read_samples(tmp_path / "a")
    (tmp_path / "a/samples.jsonl").write_text('{"correct": true, "problem_index": 4}\n')
    assert read_samples(tmp_path / "a") == [{"correct": True, "problem_index": 4}]


def test_compare_writes_the_paired_line_for_consecutive_evals(tmp_path):
    for name, accuracy in (("base", 0.0), ("sft", 0.1), ("grpo", 0.2)):
        write_fake_eval(tmp_path / name, accuracy=accuracy)
    write_samples(tmp_path / "base", [False] * 10)
    write_samples(tmp_path / "sft", [False] * 9 + [True])
    write_samples(tmp_path / "grpo", [True] * 5 + [False] * 4 + [True])
    _, _, _, written = write_compare(
        [tmp_path / n for n in ("base", "sft", "grpo")], tmp_path / "out"
    )
    markdown = written["md"].read_text()
    assert "- base → sft, 10 shared problems: 0 both right, 0 only base, 1 only sft" in markdown
    assert "exact McNemar p = 1" in markdown
    assert "- sft → grpo, 10 shared problems: 1 both right, 0 only sft, 5 only grpo" in markdown
    assert "p = 0.062" in markdown  # 2 / 32
    paired = json.loads(written["json"].read_text())["paired"]
    assert [(p["first"], p["second"], p["only_second"]) for p in paired] == [
        ("base", "sft", 1),
        ("sft", "grpo", 5),
    ]
