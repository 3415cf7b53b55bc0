"""The example of README "Train on your own task": its data generator and its user reward."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.arithmetic import check_equations
from smolgrpo.tasks import build_task
from smolgrpo.tasks.prompts import format_reference_response

EXAMPLE = Path(__file__).parents[1] / "examples/arithmetic"


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_data_is_fixed_true_and_split_apart(tmp_path):
    make_data = load_module("make_data")
    assert make_data.main([str(tmp_path / "a"), "--train-size", "300", "--test-size", "50"]) == 0
    assert make_data.main([str(tmp_path / "b"), "--train-size", "300", "--test-size", "50"]) == 0
    for split in ("train", "test"):  # the same files on every run
        assert (tmp_path / f"a/{split}.jsonl").read_bytes() == (
            tmp_path / f"b/{split}.jsonl"
        ).read_bytes()
    rows = {
        split: [json.loads(line) for line in (tmp_path / f"a/{split}.jsonl").open()]
        for split in ("train", "test")
    }
    assert (len(rows["train"]), len(rows["test"])) == (300, 50)
    assert not {r["problem"] for r in rows["train"]} & {r["problem"] for r in rows["test"]}
    for row in rows["train"] + rows["test"]:
        a, op, b = row["problem"].removeprefix("What is ").removesuffix("?").split()
        expected = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert row["result"] == str(expected)
        steps = row["steps"].splitlines()
        assert all(check_equations(row["steps"])) and len(check_equations(row["steps"])) >= 2
        assert steps[-1].endswith(f"= {expected}")


def test_solution_field_puts_the_steps_in_the_example(tmp_path):
    make_data = load_module("make_data")
    make_data.main([str(tmp_path), "--train-size", "20", "--test-size", "5"])
    overrides = ["data.task=jsonl", f"data.source={tmp_path}", "data.question_field=problem",
                 "data.answer_field=result"]  # fmt: skip
    plain = build_task(load_config(None, overrides).data).load("train")[0]
    assert format_reference_response(plain) == (
        f"<reasoning>\n</reasoning>\n<answer>\n{plain.gold}\n</answer>"
    )
    with_steps = load_config(None, [*overrides, "data.solution_field=steps"]).data
    problem = build_task(with_steps).load("train")[0]
    row = json.loads((tmp_path / "train.jsonl").open().readline())
    assert problem.gold == row["result"] and problem.question == row["problem"]
    assert format_reference_response(problem) == (
        f"<reasoning>\n{row['steps']}\n</reasoning>\n<answer>\n{row['result']}\n</answer>"
    )
    missing = load_config(None, [*overrides, "data.solution_field=work"]).data
    with pytest.raises(
        SmolGRPOError, match=r"train.jsonl:1: no column 'work' \(data.solution_field"
    ):
        build_task(missing).load("train")


def test_closeness_reward_values():
    closeness = load_module("rewards").closeness
    completions = [
        "<answer>\n85\n</answer>",  # exact
        "<answer>80</answer>",  # 5 off of 85
        "<answer>-3</answer>",  # 88 off: floored at 0
        "no answer",
        "<answer>1</answer><answer>85</answer>",  # two answers: no credit
    ]
    scores = closeness(completions, ["85"] * 5, questions=["q"] * 5)
    assert scores == pytest.approx([1.0, 1 - 5 / 85, 0.0, 0.0, 0.0])
    assert closeness(["<answer>1</answer>"], ["0"]) == [0.0]  # |gold| < 1 divides by 1


def test_sft_takes_a_file_task_with_worked_steps(tmp_path):
    from smolgrpo.training.sft import load_sft_problems

    make_data = load_module("make_data")
    make_data.main([str(tmp_path), "--train-size", "20", "--test-size", "5"])
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").open()]
    test_row = json.loads((tmp_path / "test.jsonl").open().readline())
    rows[3] = dict(test_row)  # a test problem slipped into train: SFT must drop it
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(None, ["data.task=jsonl", f"data.source={tmp_path}",
                                "data.question_field=problem", "data.answer_field=result",
                                "data.solution_field=steps"])  # fmt: skip
    problems = load_sft_problems(config)
    assert len(problems) == 19 and test_row["problem"] not in {p.question for p in problems}
    assert format_reference_response(problems[0]) == (
        f"<reasoning>\n{rows[0]['steps']}\n</reasoning>\n<answer>\n{rows[0]['result']}\n</answer>"
    )
