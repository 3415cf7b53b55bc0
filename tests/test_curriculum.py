"""`data.max_solution_steps`: train (SFT and GRPO) only on problems whose reference solution is
short, counted by GSM8K's calculator annotations; evaluation is never cut."""

from __future__ import annotations

import json

import pytest
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.tasks import build_task, load_train_problems
from smolgrpo.tasks.data import Problem, keep_short_solutions, solution_steps
from smolgrpo.training.sft import load_sft_problems
from smolgrpo.training.trainer import Trainer


def problem(solution: str, origin: str = "toy:1") -> Problem:
    return Problem("q?", solution, solution.rsplit("####", 1)[-1].strip(), origin)


def test_solution_steps_counts_calculator_annotations_then_lines():
    two = "She has 3+4 = <<3+4=7>>7 eggs.\nThen 7*2 = <<7*2=14>>14.\n#### 14"
    assert solution_steps(problem(two)) == 2
    # Annotations win over lines: one annotated line among three lines is one step.
    assert solution_steps(problem("Intro.\nSo 2*3=<<2*3=6>>6.\nDone.\n#### 6")) == 1
    # No annotation: the non-blank lines before '####'.
    assert solution_steps(problem("First line.\n\nSecond line.\nThird.\n#### 5")) == 3
    assert solution_steps(problem("#### 5")) == 0
    assert solution_steps(Problem("q?", "5", "5", "gym:1")) is None  # no worked steps


def test_keep_short_solutions_keeps_order_and_refuses_an_empty_cut():
    problems = [
        problem("a <<1+1=2>>2 b <<2+2=4>>4 c <<4+4=8>>8\n#### 8", "t:1"),
        problem("a <<1+1=2>>2\n#### 2", "t:2"),
        problem("a <<1+1=2>>2 b <<2*3=6>>6\n#### 6", "t:3"),
    ]
    assert keep_short_solutions(problems, None) is problems
    assert [p.origin for p in keep_short_solutions(problems, 2)] == ["t:2", "t:3"]
    assert [p.origin for p in keep_short_solutions(problems, 1)] == ["t:2"]
    with pytest.raises(SmolGRPOError, match="data.max_solution_steps 1: no train problem"):
        keep_short_solutions(problems[:1], 1)


def write_split(folder, name, solutions):
    rows = [{"question": f"{name} question {i}?", "answer": s} for i, s in enumerate(solutions)]
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    step = "x <<1+1=2>>2\n"
    # train lines 1..6 take 3, 1, 2, 4, 1, 2 steps; test lines take 5 and 1.
    write_split(folder, "train", [step * n + "#### 2" for n in (3, 1, 2, 4, 1, 2)])
    write_split(folder, "test", [step * 5 + "#### 2", step + "#### 2"])
    return folder


def origins(problems):
    return [int(p.origin.rsplit(":", 1)[1]) for p in problems]


def test_load_train_problems_cuts_by_steps_then_by_train_limit(data_dir, tmp_path):
    config = load_config(None, [f"data.source={data_dir}", "data.max_solution_steps=2"])
    task = build_task(config.data)
    assert origins(load_train_problems(task, config.data)) == [2, 3, 5, 6]
    limited = load_config(
        None, [f"data.source={data_dir}", "data.max_solution_steps=2", "data.train_limit=3"]
    )
    assert origins(load_train_problems(task, limited.data)) == [2, 3, 5]
    unset = load_config(None, [f"data.source={data_dir}"])
    assert origins(load_train_problems(task, unset.data)) == [1, 2, 3, 4, 5, 6]
    # The eval split is never cut: its 5-step problem stays.
    assert len(task.load(config.data.eval_split)) == 2


def test_sft_trains_only_on_the_short_problems(data_dir, tmp_path):
    config = load_config(
        None, [f"data.source={data_dir}", "data.max_solution_steps=1", f"run.output_dir={tmp_path}"]
    )
    assert origins(load_sft_problems(config)) == [2, 5]


def test_grpo_trainer_draws_only_short_problems(data_dir, tmp_path):
    config = load_config(
        None,
        [
            f"data.source={data_dir}",
            "data.max_solution_steps=2",
            f"run.output_dir={tmp_path / 'run'}",
            "optim.max_steps=1",
        ],
    )
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer))
    trainer = Trainer(config, model=model, tokenizer=tokenizer, show_progress=False)
    assert origins(trainer.train_problems) == [2, 3, 5, 6]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.max_solution_steps=0"], r"'data.max_solution_steps': 0 \(must be >= 1\)"),
        (
            ["data.task=jsonl", "data.source=x.jsonl", "data.max_solution_steps=2"],
            "needs worked solutions.*not 'jsonl'",
        ),
        (
            ["data.task=reasoning_gym", "data.max_solution_steps=2"],
            "needs worked solutions.*not 'reasoning_gym'",
        ),
    ],
)
def test_bad_max_solution_steps_is_one_line(overrides, message):
    with pytest.raises(SmolGRPOError, match=message):
        load_config(None, overrides)


def test_gsm8k_train_split_cut_at_two_steps(gsm8k_dir, tmp_path):
    config = load_config(
        None,
        [f"data.source={gsm8k_dir}", "data.max_solution_steps=2", f"run.output_dir={tmp_path}"],
    )
    kept = load_sft_problems(config)
    # Counted independently: GSM8K train rows with at most 2 calculator annotations (2,674),
    # less the unannotated ones whose solution runs over 2 lines.
    rows = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").open()]
    expected = sum(
        1
        for row in rows
        if (
            row["answer"].count("<<")
            or len([ln for ln in row["answer"].split("####")[0].splitlines() if ln.strip()])
        )
        <= 2
    )
    assert len(kept) == expected
    assert 2400 < expected <= 2674
    assert all(solution_steps(p) <= 2 for p in kept)


def test_model_card_says_the_training_problems_were_cut(data_dir):
    from smolgrpo.reporting.model_card import build_model_card

    overrides = [f"data.source={data_dir}", "data.max_solution_steps=2", "data.train_limit=3"]
    card = build_model_card(load_config(None, overrides).to_dict(), [])
    line = next(line for line in card.splitlines() if line.startswith("- Data: "))
    assert line == (
        f"- Data: local JSONL `{data_dir.name}/train.jsonl` (`train` split), only problems solved in "
        "at most 2 reference steps, first 3 problems"
    )
    uncut = build_model_card(load_config(None, [f"data.source={data_dir}"]).to_dict(), [])
    assert "reference steps" not in uncut
