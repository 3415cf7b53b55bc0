"""Tasks (tasks/): loading with a field mapping, answer checks on literal strings, the config
keys and their one-line errors, and the model card of a non-GSM8K run."""

from __future__ import annotations

import json
import sys

import pytest

from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.reporting.model_card import build_model_card
from smolgrpo.rewards.answers import is_correct
from smolgrpo.rewards.builtin import DEFAULT_REWARD_WEIGHTS
from smolgrpo.rewards.scoring import score_completions
from smolgrpo.tasks import TASK_KINDS, TEXT_REWARD_WEIGHTS, build_task, saved_task_kind, task_kind
from smolgrpo.tasks.data import load_problems
from smolgrpo.tasks.files import check_exact, check_number, normalize_exact
from smolgrpo.tasks.prompts import format_reference_response


def answer(text: str) -> str:
    return f"<reasoning>\nthinking\n</reasoning>\n<answer>\n{text}\n</answer>"


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def data_config(*overrides):
    return load_config(None, list(overrides)).data


# ----------------------------------------------------------------------------- gsm8k
def test_default_task_is_gsm8k_and_unchanged(gsm8k_dir):
    config = load_config(None, [f"data.source={gsm8k_dir}"])
    assert config.data.task == "gsm8k" and config.rewards.weights == DEFAULT_REWARD_WEIGHTS
    task = build_task(config.data)
    assert task.name == "gsm8k" and task.answer_check is None  # rewards.py's numeric match
    assert task.load("test", 20, 3, True) == load_problems(str(gsm8k_dir), "test", 20, 3, True)


# ----------------------------------------------------------------------------- jsonl / csv
def test_jsonl_task_maps_fields_and_reads_split_folders(tmp_path):
    rows = [{"prompt": "Capital of France?", "label": " Paris "}, {"prompt": "2+2?", "label": 4}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[:1])
    data = data_config(
        "data.task=jsonl",
        f"data.source={tmp_path}",
        "data.question_field=prompt",
        "data.answer_field=label",
        "data.answer_type=exact",
    )
    task = build_task(data)
    train = task.load("train")
    assert [(p.question, p.gold) for p in train] == [("Capital of France?", "Paris"), ("2+2?", "4")]
    assert train[0].origin == f"{tmp_path / 'train.jsonl'}:1"
    assert len(task.load("test")) == 1 and len(task.load("train", limit=1)) == 1
    assert format_reference_response(train[0]).endswith("<answer>\nParis\n</answer>")


def test_csv_task_reads_a_header_and_rows(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('q,a\n"Say hi, politely",Hello there\nColour of the sky?,blue\n')
    data = data_config("data.task=csv", f"data.source={path}", "data.question_field=q")
    data.answer_field, data.answer_type = "a", "exact"
    problems = build_task(data).load("train")
    assert [p.question for p in problems] == ["Say hi, politely", "Colour of the sky?"]
    assert problems[1].origin == f"{path}:3"


def test_missing_column_names_file_line_and_column(tmp_path):
    source = write_jsonl(tmp_path / "qa.jsonl", [{"q": "A", "a": "1"}, {"q": "B", "ans": "2"}])
    data = data_config("data.task=jsonl", f"data.source={source}", "data.question_field=q")
    data.answer_field = "a"
    with pytest.raises(SmolGRPOError, match=rf"^{source}:2: no column 'a' .*columns: q, ans"):
        build_task(data).load("train")
    csv_path = tmp_path / "qa.csv"
    csv_path.write_text("question,solution\nQ,1\n")
    data = data_config("data.task=csv", f"data.source={csv_path}")
    with pytest.raises(SmolGRPOError, match=rf"^{csv_path}:2: no column 'answer'"):
        build_task(data).load("train")


def test_number_answers_must_be_numbers(tmp_path):
    source = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q", "answer": "seven"}])
    data = data_config("data.task=jsonl", f"data.source={source}")
    with pytest.raises(SmolGRPOError, match=rf"^{source}:1: answer 'seven' is not a number"):
        build_task(data).load("train")


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.task=gsm9k", "unknown task 'gsm9k' for 'data.task' (valid: gsm8k, jsonl, csv, "),
        ("data.answer_type=fuzzy", "'fuzzy' for 'data.answer_type' (valid: number, exact, math)"),
    ],
)
def test_unknown_task_or_answer_type_is_one_line(override, message):
    with pytest.raises(SmolGRPOError) as error:
        load_config(None, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_each_task_value_is_one_kind():
    assert list(TASK_KINDS) == ["gsm8k", "jsonl", "csv", "hub", "reasoning_gym"]
    assert all(task_kind(name).name == name for name in TASK_KINDS)
    with pytest.raises(SmolGRPOError, match=r"^config: unknown task 'gsm9k' for 'data.task'"):
        task_kind("gsm9k")
    # A config saved before there were tasks has no `task` key: GSM8K.
    assert saved_task_kind({}) is task_kind("gsm8k")
    assert saved_task_kind({"task": "reasoning_gym"}).card_tags({"gym_dataset": "countdown"}) == [
        "reasoning-gym-countdown"
    ]
    assert task_kind("reasoning_gym").default_reward_weights(None) == TEXT_REWARD_WEIGHTS


def test_math_answers_without_math_verify_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import fails
    with pytest.raises(SmolGRPOError, match=r"math-verify.*smolgrpo\[math\]"):
        load_config(None, ["data.task=jsonl", "data.answer_type=math"])


def test_text_tasks_default_to_format_and_correctness_rewards():
    assert load_config(None, ["data.task=jsonl", "data.answer_type=exact"]).rewards.weights == (
        TEXT_REWARD_WEIGHTS
    )
    numeric = load_config(None, ["data.task=csv"]).rewards.weights
    assert numeric == DEFAULT_REWARD_WEIGHTS
    chosen = load_config(None, ["data.task=jsonl", "rewards.weights={correctness: 1.0}"])
    assert chosen.rewards.weights == {"correctness": 1.0}
    # Weights written out, even equal to GSM8K's defaults, are the user's choice: kept.
    gsm8k_weights = "{" + ", ".join(f"{k}: {v}" for k, v in DEFAULT_REWARD_WEIGHTS.items()) + "}"
    text = ["data.task=jsonl", "data.answer_type=exact", f"rewards.weights={gsm8k_weights}"]
    assert load_config(None, text).rewards.weights == DEFAULT_REWARD_WEIGHTS


# ----------------------------------------------------------------------------- answer checks
def test_exact_check_normalises_case_and_spaces():
    assert normalize_exact("  New   York\n") == "new york"
    assert check_exact("new york", "New  York") == 1.0
    assert check_exact("Paris", "paris ") == 1.0
    assert check_exact("Paris, France", "Paris") == 0.0
    assert check_exact(None, "Paris") == 0.0


def test_number_check_is_the_gsm8k_match():
    assert check_number("$1,000", "1000") == 1.0
    assert check_number("72, 73", "72") == 0.0
    assert check_number(None, "72") == 0.0


def test_math_check_accepts_equivalent_forms():
    pytest.importorskip("math_verify")
    from smolgrpo.rewards.math_answers import check_math

    assert check_math("1/2", "\\frac{1}{2}") == 1.0
    assert check_math("0.5", "\\frac{1}{2}") == 1.0
    assert check_math("1+x^2", "x^2+1") == 1.0
    assert check_math("\\sqrt{2}", "2^{1/2}") == 1.0
    assert check_math("3", "4") == 0.0
    assert check_math(None, "4") == 0.0


def test_math_answers_are_checked_in_the_sandbox_never_in_process(tmp_path):
    pytest.importorskip("math_verify")
    from smolgrpo.rewards.sandbox import SandboxedCheck

    source = write_jsonl(tmp_path / "qa.jsonl", [{"question": "half?", "answer": "\\frac{1}{2}"}])
    task = build_task(
        data_config("data.task=jsonl", f"data.source={source}", "data.answer_type=math")
    )
    assert isinstance(task.answer_check, SandboxedCheck)
    marker = tmp_path / "MARKER"
    hostile = [f"__import__('os').system('touch {marker}')", "9**9**9**9", "exit()"]
    outcomes = task.answer_check.check_batch(["0.5", "1/3", *hostile], ["\\frac{1}{2}"] * 5)
    assert [outcome.score for outcome in outcomes] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert not marker.exists()


def test_correctness_reward_uses_the_task_check_on_the_extracted_answer():
    completions = [
        answer("new york"),
        answer("Boston"),
        "the answer is New York",  # no <answer> block: nothing extracted
        answer("New York") + "<answer>Boston</answer>",  # two answer blocks: refused
    ]
    golds = ["New York"] * 4
    scored = score_completions(completions, golds, {"correctness": 1.0}, answer_check=check_exact)
    assert scored.per_reward["correctness"] == [1.0, 0.0, 0.0, 0.0]
    gsm8k = score_completions(completions, golds, {"correctness": 1.0})
    assert gsm8k.per_reward["correctness"] == [0.0, 0.0, 0.0, 0.0]  # not numbers


def test_eval_correctness_uses_the_task_check():
    assert is_correct("paris", "Paris", check_exact)
    assert not is_correct("72", "Paris", check_exact)
    assert is_correct("72.0", "72", None)

    def broken(answer, gold):
        raise RuntimeError("boom")

    assert not is_correct("x", "x", broken)


# ----------------------------------------------------------------------------- model card
def test_model_card_names_the_task_not_gsm8k(tmp_path):
    source = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q", "answer": "A"}])
    config = load_config(
        None, ["model.name=embedded", "data.task=jsonl", f"data.source={source}"]
    ).to_dict()
    config["data"]["answer_type"] = "exact"
    card = build_model_card(config, [])
    assert "GSM8K" not in card and "gsm8k" not in card
    assert "# GRPO fine-tune for JSONL `qa.jsonl` (exact answers)" in card  # no local path
    data_line = next(line for line in card.splitlines() if line.startswith("- Data: "))
    assert data_line == (
        "- Data: local JSONL `qa.jsonl` (question `question`, answer `answer`, exact answers)"
    )
    gym = dict(config, data={**config["data"], "task": "reasoning_gym", "gym_size": 50})
    card = build_model_card(gym, [])
    assert "# GRPO fine-tune for countdown (reasoning-gym)" in card and "GSM8K" not in card
    assert "- Data: reasoning-gym `countdown`, 50 generated problems (seed 0)" in card


def test_sft_refuses_a_task_without_worked_solutions():
    from smolgrpo.training.sft import load_sft_problems

    config = load_config(None, ["data.task=jsonl", "data.source=qa.jsonl"])
    with pytest.raises(SmolGRPOError, match="sft needs worked solutions: .*not 'jsonl' without"):
        load_sft_problems(config)
    gym = load_config(None, ["data.task=reasoning_gym"])
    with pytest.raises(SmolGRPOError, match="sft needs worked solutions: .*not 'reasoning_gym'\\)"):
        load_sft_problems(gym)


# ----------------------------------------------------------------------------- hub datasets
def test_hub_task_maps_fields_of_a_hub_dataset(monkeypatch):
    """`datasets.load_dataset` is replaced (no network here): the loader's real path runs."""
    datasets = pytest.importorskip("datasets")
    import smolgrpo.tasks.data as data_module

    calls = []

    def load_dataset(dataset_id, config_name, split):
        calls.append((dataset_id, config_name, split))
        rows = [{"q": "2+2?", "a": 4, "why": "2 + 2 = 4"}, {"q": "3+3?", "a": 6, "why": "x"}]
        if split == "bad":
            rows.append({"q": "1+1?", "b": "2", "why": "x"})
        return datasets.Dataset.from_list(rows) if split != "bad" else rows

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data_module, "hub_reachable", lambda *a, **k: True)
    overrides = ["data.task=hub", "data.source=someone/sums", "data.hub_config=easy",
                 "data.question_field=q", "data.answer_field=a"]  # fmt: skip
    task = build_task(load_config(None, overrides).data)
    problems = task.load("test")
    assert calls == [("someone/sums", "easy", "test")]
    assert [(p.question, p.gold, p.origin) for p in problems] == [
        ("2+2?", "4", "someone/sums[test]:0"),
        ("3+3?", "6", "someone/sums[test]:1"),
    ]
    assert task.title == "hub dataset `someone/sums` (number answers)"
    steps = build_task(load_config(None, [*overrides, "data.solution_field=why"]).data)
    assert steps.load("test")[0].solution == "2 + 2 = 4\n#### 4"
    with pytest.raises(SmolGRPOError, match=r"someone/sums\[bad\]:2: no column 'a'"):
        task.load("bad")
    with pytest.raises(SmolGRPOError, match="'hub' needs data.source"):
        build_task(load_config(None, ["data.task=hub"]).data).load("test")
