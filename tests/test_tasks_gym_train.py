"""reasoning-gym tasks (skipped without the package), a 1-step train per non-GSM8K task on a
tiny model, and the task errors through the real command line (exit 2, one line)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model
from test_trainer import make_config

from smolgrpo.cli import main as cli
from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards import builtin as rewards
from smolgrpo.runs.metrics_log import read_metrics
from smolgrpo.tasks import build_task
from smolgrpo.tasks.files import check_exact
from smolgrpo.training.trainer import Trainer


def gym_data(*overrides):
    pytest.importorskip("reasoning_gym")
    return load_config(None, ["data.task=reasoning_gym", *overrides]).data


# ----------------------------------------------------------------------------- reasoning-gym
def test_countdown_is_reproducible_and_eval_never_overlaps_train():
    data = gym_data("data.gym_dataset=countdown", "data.gym_size=30", "data.gym_seed=5")
    task = build_task(data)
    train, again, test = task.load("train"), task.load("train"), task.load("test")
    assert len(train) == 30 and train == again
    assert test and not {p.question for p in train} & {p.question for p in test}
    assert train[0].origin == "countdown[seed=5]:0"
    other_seed = build_task(gym_data("data.gym_size=30", "data.gym_seed=6")).load("train")
    assert [p.question for p in other_seed] != [p.question for p in train]


def test_countdown_check_is_the_datasets_score_answer():
    task = build_task(gym_data("data.gym_size=3"))
    problem = task.load("train")[0]
    entry = json.loads(problem.gold)
    assert entry["question"] == problem.question and problem.solution == entry["answer"]
    assert task.answer_check(entry["answer"], problem.gold) == 1.0
    assert task.answer_check("1 + 1", problem.gold) < 1.0
    assert task.answer_check(None, problem.gold) == 0.0  # no <answer> block: no format credit


def test_gym_config_passes_the_datasets_own_options():
    data = gym_data(
        "data.gym_size=20",
        "data.gym_config={min_numbers: 3, max_numbers: 3, min_target: 10, max_target: 50}",
    )
    task = build_task(data)
    assert task.title == (
        "countdown (reasoning-gym; min_numbers=3, max_numbers=3, min_target=10, max_target=50)"
    )
    for problem in task.load("train") + task.load("test"):
        entry = json.loads(problem.gold)
        assert len(entry["metadata"]["numbers"]) == 3 and entry["metadata"]["target"] <= 50
        assert task.answer_check(entry["answer"], problem.gold) == 1.0
    plain = build_task(gym_data("data.gym_size=20")).load("train")
    assert max(len(json.loads(p.gold)["metadata"]["numbers"]) for p in plain) > 3


def test_gym_config_errors_name_the_key():
    with pytest.raises(SmolGRPOError, match=r"unknown option 'data.gym_config.min_number' .*"
                       r"valid: .*min_numbers"):  # fmt: skip
        gym_data("data.gym_config={min_number: 3}")
    with pytest.raises(SmolGRPOError, match=r"invalid 'data.gym_config'.*greater than 1"):
        gym_data("data.gym_config={min_numbers: 0}")
    with pytest.raises(SmolGRPOError, match=r"'data.gym_config' should be"):
        gym_data("data.gym_config=3")


def test_gsm_symbolic_loads_and_checks():
    task = build_task(gym_data("data.gym_dataset=gsm_symbolic", "data.gym_size=2"))
    problem = task.load("train")[0]
    assert task.answer_check(problem.solution, problem.gold) == 1.0
    assert task.answer_check("-12345", problem.gold) < 1.0


def test_unknown_gym_dataset_lists_some_valid_names():
    pytest.importorskip("reasoning_gym")
    with pytest.raises(SmolGRPOError, match=r"unknown reasoning-gym dataset 'countdwn'.*countdown"):
        load_config(None, ["data.task=reasoning_gym", "data.gym_dataset=countdwn"])


# ----------------------------------------------------------------------------- one train step
def train_one_step(tmp_path, *overrides) -> tuple[Trainer, list[dict]]:
    reward = "rewards.weights={correctness: 1.0, varied: 1.0}"
    config = make_config(tmp_path, "optim.max_steps=1", reward, *overrides)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = Trainer(config, model=model, tokenizer=tokenizer, show_progress=False)
    trainer.train()
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    return trainer, read_metrics(tmp_path / "run/metrics.jsonl")


def varied_reward(completions, answers, **fields):
    """A tiny random model almost never answers right: this gives its groups a spread."""
    return [len(completion) % 3 / 2 for completion in completions]


@pytest.fixture(autouse=True)
def toy_reward(monkeypatch):
    monkeypatch.setitem(rewards.REWARDS, "varied", rewards.RewardSpec(varied_reward))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_one_step_on_a_jsonl_task_with_exact_answers(tmp_path):
    rows = [{"q": f"Say {word}", "a": word} for word in ("yes", "no", "maybe", "ok")]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    trainer, metrics = train_one_step(
        tmp_path,
        "data.task=jsonl",
        f"data.source={tmp_path / 'qa.jsonl'}",
        "data.question_field=q",
        "data.answer_field=a",
        "data.answer_type=exact",
    )
    assert trainer.task.name == "jsonl" and trainer.train_problems[0].gold == "yes"
    assert trainer.task.answer_check is check_exact  # the correctness reward's comparison
    assert [row["step"] for row in metrics] == [1]
    card = (tmp_path / "run/final/README.md").read_text()
    assert "GSM8K" not in card and "exact answers" in card


def test_one_step_on_countdown(tmp_path):
    pytest.importorskip("reasoning_gym")
    trainer, metrics = train_one_step(
        tmp_path, "data.task=reasoning_gym", "data.gym_dataset=countdown", "data.gym_size=8"
    )
    assert trainer.task.title == "countdown (reasoning-gym)"
    assert [row["step"] for row in metrics] == [1]
    assert "countdown (reasoning-gym)" in (tmp_path / "run/final/README.md").read_text()
    saved = json.loads((tmp_path / "run/final/task.json").read_text())
    assert saved["task"] == "reasoning_gym" and saved["gym_size"] == 8
    # eval of the saved model needs no task flags: it reads task.json
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tmp_path / "run/final"), "--limit", "2"]
    assert cli.main([*argv, "--max-new-tokens", "3", "--output-dir", str(out)]) == 0
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["task"] == "countdown (reasoning-gym)" and evaluated["num_problems"] == 2


def test_eval_task_flags_start_from_the_saved_task(tmp_path):
    pytest.importorskip("reasoning_gym")
    from types import SimpleNamespace

    from smolgrpo.cli.task_args import task_from_args

    saved = {"task": "reasoning_gym", "gym_dataset": "countdown", "gym_size": 5,
             "gym_seed": 3, "gym_config": {"min_numbers": 3, "max_numbers": 3}}  # fmt: skip
    (tmp_path / "task.json").write_text(json.dumps(saved))
    flags = dict.fromkeys(("task", "data", "question_field", "answer_field", "answer_type",
                           "solution_field", "hub_config", "gym_dataset", "gym_size",
                           "gym_seed", "gym_config"))  # fmt: skip

    def task(**given):
        return task_from_args(SimpleNamespace(model=str(tmp_path), **{**flags, **given}))

    problems = task().load("train")
    assert len(problems) == 5 and problems[0].origin == "countdown[seed=3]:0"
    assert all(len(json.loads(p.gold)["metadata"]["numbers"]) == 3 for p in problems)
    assert len(task(gym_size=2).load("train")) == 2  # a flag wins over the saved value
    assert task(gym_config="{max_numbers: 4}").title.endswith("max_numbers=4)")
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "Q", "answer": "A"}\n')
    other = task(task="jsonl", data=str(data), answer_type="exact")  # none of the saved fields
    assert other.name == "jsonl" and other.load("train")[0].gold == "A"
    (tmp_path / "task.json").write_text("[1]")
    with pytest.raises(SmolGRPOError, match=r"task.json: unreadable task file"):
        task()
    with pytest.raises(SmolGRPOError, match=r"--gym-config '3': expected a YAML mapping"):
        task_from_args(SimpleNamespace(model=None, **{**flags, "gym_config": "3"}))


# ----------------------------------------------------------------------------- command line
def cli_error(argv, capsys) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and captured.out == ""
    return lines[0]


def test_cli_task_errors_are_one_line(tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "Q", "answer": "A"}\n{"question": "Q2", "solution": "B"}\n')
    model = tmp_path / "missing-model"  # the data is checked before any model is loaded
    base = ["eval", "--model", str(model), "--data", str(data)]
    line = cli_error([*base, "--task", "jsonl", "--answer-type", "exact"], capsys)
    assert f"{data}:2: no column 'answer'" in line and "solution" in line
    line = cli_error([*base, "--task", "jsonl", "--answer-field", "label"], capsys)
    assert f"{data}:1: no column 'label'" in line
    line = cli_error([*base, "--task", "parquet"], capsys)
    assert "unknown task 'parquet'" in line and "gsm8k, jsonl, csv, hub, reasoning_gym" in line
    line = cli_error([*base, "--task", "jsonl", "--answer-type", "regex"], capsys)
    assert "unknown answer type 'regex'" in line and "number, exact, math" in line
    line = cli_error(["train", "--set", "data.task=parquet", "--print-config"], capsys)
    assert "unknown task 'parquet'" in line


def test_cli_unknown_gym_dataset_is_one_line(tmp_path, capsys):
    pytest.importorskip("reasoning_gym")
    argv = ["eval", "--model", str(tmp_path / "m"), "--task", "reasoning_gym"]
    line = cli_error([*argv, "--gym-dataset", "countdwn"], capsys)
    assert "unknown reasoning-gym dataset 'countdwn'" in line and "countdown" in line
    line = cli_error(["train", "--set", "data.task=reasoning_gym", "--set",
                      "data.gym_dataset=countdwn", "--print-config"], capsys)  # fmt: skip
    assert "gsm_symbolic" in line
