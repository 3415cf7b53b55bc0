"""Evaluation: pass@k estimator, metric aggregation, outputs, and agreement with the reward."""

from __future__ import annotations

import json
from math import comb

import pytest
import torch

import smolgrpo.evaluation.evaluate as evaluate_module
from smolgrpo.errors import SmolGRPOError
from smolgrpo.evaluation import output_folder
from smolgrpo.evaluation.evaluate import evaluate, pass_at_k, summarize
from smolgrpo.evaluation.settings import EvalSettings
from smolgrpo.generation.rollout import Rollout
from smolgrpo.rewards.builtin import DEFAULT_REWARD_WEIGHTS
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import PromptTemplate

PROBLEMS = [
    Problem(question="What is 2+2?", solution="2+2=4\n#### 4", gold="4", origin="hand:1"),
    Problem(question="What is 3*5?", solution="3*5=15\n#### 15", gold="15", origin="hand:2"),
    Problem(question="What is 10-12?", solution="10-12=-2\n#### -2", gold="-2", origin="hand:3"),
]
METRIC_KEYS = {
    "num_problems",
    "num_samples",
    "accuracy",
    "accuracy_last_number",
    "strict_format_rate",
    "soft_format_rate",
    "mean_completion_tokens",
    "truncation_rate",
    "mean_total_reward",
    "time_s",
    "max_new_tokens",
    "temperature",
    "top_p",
}
RATE_KEYS = [
    "accuracy",
    "accuracy_last_number",
    "strict_format_rate",
    "soft_format_rate",
    "truncation_rate",
]
PERFECT = "<reasoning>\n2+2=4\n</reasoning>\n<answer>\n4\n</answer>"


# --------------------------------------------------------------------------- pass@k


def test_pass_at_k_hand_computed():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2))
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 0, 5) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0  # n - c = 1 < k: every pair holds a correct sample
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize(("n", "c", "k"), [(10, 3, 1), (10, 3, 4), (16, 1, 8), (64, 5, 32)])
def test_pass_at_k_matches_binomial_formula(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="larger than"):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 0)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


# --------------------------------------------------------------------------- summarize


def record(problem_index, correct, last, strict, soft, tokens, truncated, total):
    return {
        "problem_index": problem_index,
        "origin": f"hand:{problem_index}",
        "correct": correct,
        "correct_last_number": last,
        "rewards": {"correctness": float(correct), "strict_format": strict, "soft_format": soft},
        "completion_tokens": tokens,
        "truncated": truncated,
        "total_reward": total,
    }


def test_summarize_hand_computed():
    records = [
        record(0, True, True, 1.0, 1.0, 10, False, 3.0),
        record(0, False, True, 0.0, 1.0, 20, False, 0.5),
        record(1, False, False, 0.0, 0.0, 30, True, 0.0),
        record(1, False, False, 1.0, 1.0, 40, False, 1.0),
    ]
    metrics = summarize(records, num_samples=2)
    assert metrics["num_problems"] == 2
    assert metrics["num_samples"] == 2
    assert metrics["accuracy"] == 0.25
    assert metrics["accuracy_last_number"] == 0.5
    assert metrics["strict_format_rate"] == 0.5
    assert metrics["soft_format_rate"] == 0.75
    assert metrics["truncation_rate"] == 0.25
    assert metrics["mean_completion_tokens"] == 25.0
    assert metrics["mean_total_reward"] == pytest.approx(1.125)
    assert metrics["reward/correctness"] == 0.25
    assert metrics["reward/strict_format"] == 0.5
    assert metrics["pass@1"] == pytest.approx(0.25)  # (1/2 + 0/2) / 2
    assert metrics["pass@2"] == pytest.approx(0.5)  # (1 + 0) / 2


def test_summarize_single_sample_has_no_pass_at_k():
    metrics = summarize([record(0, True, True, 1.0, 1.0, 7, False, 2.0)], num_samples=1)
    assert metrics["accuracy"] == 1.0 and metrics["num_problems"] == 1
    assert not any(key.startswith("pass@") for key in metrics)


def test_summarize_pass_at_k_values_for_four_samples():
    records = [record(0, c, c, 0.0, 0.0, 1, False, 0.0) for c in (True, False, False, False)]
    metrics = summarize(records, num_samples=4)
    passes = {k for k in metrics if k.startswith("pass@") and not k.endswith("_ci95")}
    assert passes == {"pass@1", "pass@2", "pass@4"}
    assert all(f"{k}_ci95" in metrics for k in passes)
    assert metrics["pass@1"] == pytest.approx(0.25)
    assert metrics["pass@2"] == pytest.approx(1 - comb(3, 2) / comb(4, 2))
    assert metrics["pass@4"] == 1.0


def test_summarize_groups_by_problem_not_origin():
    # two different problems that share an origin string (duplicated rows) stay separate
    records = [
        record(i, c, c, 0.0, 0.0, 1, False, 0.0) for i, c in [(0, 1), (0, 1), (1, 0), (1, 0)]
    ]
    for r in records:
        r["origin"] = "same:1"
    assert summarize(records, num_samples=2)["pass@2"] == 0.5


def test_summarize_empty():
    metrics = summarize([], num_samples=2)
    assert metrics["num_problems"] == 0 and metrics["accuracy"] == 0.0


# --------------------------------------------------------------------------- evaluate (tiny model)


def test_evaluate_tiny_model_greedy(tiny_model, char_tokenizer):
    settings = EvalSettings(batch_size=2, max_new_tokens=6)  # two batches, the second short
    metrics, records = evaluate(tiny_model, char_tokenizer, PROBLEMS, settings, show_progress=False)
    assert METRIC_KEYS <= set(metrics)
    assert {f"reward/{name}" for name in DEFAULT_REWARD_WEIGHTS} <= set(metrics)
    assert metrics["num_problems"] == 3 and metrics["num_samples"] == 1
    assert metrics["max_new_tokens"] == 6 and metrics["temperature"] == 0.0
    for key in RATE_KEYS:
        assert 0.0 <= metrics[key] <= 1.0
    assert 0 < metrics["mean_completion_tokens"] <= 6
    assert not any(key.startswith("pass@") for key in metrics)
    assert len(records) == 3
    assert [r["origin"] for r in records] == ["hand:1", "hand:2", "hand:3"]
    assert [r["gold"] for r in records] == ["4", "15", "-2"]
    for r, problem in zip(records, PROBLEMS, strict=True):
        assert r["prompt"].endswith("<reasoning>\n")
        assert problem.question in r["prompt"]
        assert r["completion"].startswith("<reasoning>\n")  # prefill + generated text
        assert 1 <= r["completion_tokens"] <= 6
        assert set(r["rewards"]) == set(DEFAULT_REWARD_WEIGHTS)
        assert r["sample_index"] == 0


def test_evaluate_stops_keeping_the_batches_done_or_raising(tiny_model, char_tokenizer):
    from smolgrpo.runs.interrupts import StopRequested

    batches = []
    options = dict(settings=EvalSettings(batch_size=1, max_new_tokens=4), show_progress=False)
    stop = lambda: len(batches) == 2  # noqa: E731 - asked after the second batch
    metrics, records = evaluate(
        tiny_model,
        char_tokenizer,
        PROBLEMS,
        should_stop=stop,
        on_batch=batches.append,
        keep_partial=True,
        **options,
    )
    assert metrics["partial"] is True and metrics["num_problems"] == 2
    assert metrics["num_problems_planned"] == 3 and records == batches[0] + batches[1]
    # `done` continues from there: the same records as one uninterrupted call
    _, rest = evaluate(tiny_model, char_tokenizer, PROBLEMS, done=records, **options)
    _, whole = evaluate(tiny_model, char_tokenizer, PROBLEMS, **options)
    assert rest == whole
    batches.clear()
    with pytest.raises(StopRequested):  # training's periodic eval: the stop drops the eval
        evaluate(
            tiny_model,
            char_tokenizer,
            PROBLEMS,
            should_stop=stop,
            on_batch=batches.append,
            **options,
        )


def test_evaluate_tiny_model_sampled_pass_at_k(tiny_model, char_tokenizer):
    torch.manual_seed(0)
    settings = EvalSettings(batch_size=2, max_new_tokens=4, num_samples=2, temperature=1.0)
    metrics, records = evaluate(tiny_model, char_tokenizer, PROBLEMS, settings, show_progress=False)
    assert len(records) == 6
    assert metrics["num_problems"] == 3 and metrics["num_samples"] == 2
    assert "pass@1" in metrics and "pass@2" in metrics
    assert 0.0 <= metrics["pass@1"] <= metrics["pass@2"] <= 1.0
    assert metrics["pass@1"] == pytest.approx(metrics["accuracy"])
    assert [r["sample_index"] for r in records] == [0, 1, 0, 1, 0, 1]
    assert [r["problem_index"] for r in records] == [0, 0, 1, 1, 2, 2]
    assert [r["gold"] for r in records] == ["4", "4", "15", "15", "-2", "-2"]
    assert records[0]["prompt"] == records[1]["prompt"] != records[2]["prompt"]


def test_evaluate_leaves_training_mode_alone(tiny_model, char_tokenizer):
    tiny_model.train()
    settings = EvalSettings(max_new_tokens=2)
    evaluate(tiny_model, char_tokenizer, PROBLEMS[:1], settings, show_progress=False)
    assert tiny_model.training


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_samples": 2, "temperature": 0.0}, "num_samples > 1 needs temperature > 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"num_samples": 0}, "num_samples must be at least 1"),
        ({"temperature": -1.0}, "temperature must be >= 0, got -1.0"),
        ({"temperature": 1.0, "top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
    ],
)
def test_bad_eval_settings_are_user_errors_naming_the_setting(options, message):
    with pytest.raises(SmolGRPOError, match=message) as caught:
        EvalSettings(**options)
    assert "--" not in str(caught.value)  # a library error: no flag names


def test_eval_settings_defaults():
    settings = EvalSettings(reward_weights={})
    assert settings.template == PromptTemplate() and settings.few_shot is None
    assert settings.reward_weights is DEFAULT_REWARD_WEIGHTS  # empty: the default rewards


# --------------------------------------------------------------------------- same check as reward


def fake_generate_returning(responses_by_prompt):
    """A stand-in for rollout.generate that answers each prompt with a fixed response."""

    def fake_generate(model, tokenizer, prompts, *, num_generations=1, prefill="", **_):
        responses = []
        for prompt in prompts:
            question = prompt.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
            responses += [responses_by_prompt[question]] * num_generations
        n = len(responses)
        lengths = torch.tensor([min(len(r), 8) for r in responses])
        mask = (torch.arange(8).unsqueeze(0) < lengths.unsqueeze(1)).long()
        return Rollout(
            prompt_ids=torch.ones(n, 3, dtype=torch.long),
            prompt_mask=torch.ones(n, 3, dtype=torch.long),
            completion_ids=torch.ones(n, 8, dtype=torch.long),
            completion_mask=mask,
            truncated=torch.tensor([r.endswith("...") for r in responses]),
            responses=responses,
        )

    return fake_generate


def test_evaluate_perfect_response_scores_one(monkeypatch, char_tokenizer):
    problem = Problem(question="What is 2+2?", solution="#### 4", gold="4", origin="hand:1")
    monkeypatch.setattr(
        evaluate_module, "generate", fake_generate_returning({problem.question: PERFECT})
    )
    metrics, records = evaluate(None, char_tokenizer, [problem], show_progress=False)
    assert metrics["accuracy"] == 1.0
    assert metrics["strict_format_rate"] == 1.0
    assert metrics["soft_format_rate"] == 1.0
    assert metrics["accuracy_last_number"] == 1.0
    assert metrics["truncation_rate"] == 0.0
    assert records[0]["extracted_answer"] == "4"
    assert records[0]["rewards"]["correctness"] == 1.0
    assert records[0]["total_reward"] == pytest.approx(
        sum(DEFAULT_REWARD_WEIGHTS.values())  # every reward is 1 for this response
    )


def test_eval_progress_is_a_plain_line_per_batch_in_a_log_file(monkeypatch, char_tokenizer, capsys):
    # Under pytest stdout is not a terminal, as when `smolgrpo eval ... > eval.log`.
    right = Problem(question="What is 2+2?", solution="#### 4", gold="4", origin="hand:1")
    wrong = Problem(question="What is 3+3?", solution="#### 6", gold="6", origin="hand:2")
    responses = {right.question: PERFECT, wrong.question: PERFECT}
    monkeypatch.setattr(evaluate_module, "generate", fake_generate_returning(responses))
    settings = EvalSettings(batch_size=1)
    evaluate(None, char_tokenizer, [right, wrong, right], settings, show_progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  batch ")[0] for line in lines] == [
        "eval problem 1/3  acc 100.0%",
        "eval problem 2/3  acc 50.0%",
        "eval problem 3/3  acc 66.7%",
    ]
    assert lines[-1].endswith("eta 0.0s")


def test_evaluate_uses_the_reward_answer_check(monkeypatch, char_tokenizer):
    responses = {
        "q1": PERFECT,
        "q2": "<reasoning>\nok\n</reasoning>\n<answer>\n$1,000\n</answer>",  # gold 1000
        "q3": "<reasoning>\n2+2=4\n</reasoning>\nThe answer is 4",  # no tag: last number only
        "q4": "<answer>4</answer><answer>5</answer>",  # two answers: never correct
        "q5": "<reasoning>\nx\n</reasoning>\n<answer>\n4 or 5\n</answer>",  # two numbers
        "q6": "<reasoning>\nx\n</reasoning>\n<answer>\n\u0664\n</answer>",  # Arabic-Indic 4
        "q7": "<reasoning>\nthinking...",  # truncated
    }
    golds = {"q1": "4", "q2": "1000", "q3": "4", "q4": "4", "q5": "4", "q6": "4", "q7": "4"}
    problems = [Problem(q, f"#### {g}", g, f"hand:{q}") for q, g in golds.items()]
    monkeypatch.setattr(evaluate_module, "generate", fake_generate_returning(responses))
    settings = EvalSettings(batch_size=3)
    metrics, records = evaluate(None, char_tokenizer, problems, settings, show_progress=False)
    correct = [r["correct"] for r in records]
    assert correct == [True, True, False, False, False, False, False]
    # evaluation and the correctness reward can never disagree
    assert correct == [r["rewards"]["correctness"] == 1.0 for r in records]
    assert [r["correct_last_number"] for r in records] == [
        True,
        True,
        True,
        False,  # last number is 5
        False,
        False,
        False,
    ]
    assert [r["extracted_answer"] for r in records] == [
        "4",
        "$1,000",
        None,
        None,
        "4 or 5",
        "\u0664",
        None,
    ]
    assert metrics["accuracy"] == pytest.approx(2 / 7)
    assert metrics["accuracy_last_number"] == pytest.approx(3 / 7)
    assert metrics["strict_format_rate"] == pytest.approx(4 / 7)  # q1, q2, q5, q6
    assert metrics["truncation_rate"] == pytest.approx(1 / 7)


# --------------------------------------------------------------------------- outputs


def write_eval_outputs(output_dir, metrics, records):
    """What `smolgrpo eval` writes: the folder, each batch's samples, then metrics.json."""
    output_folder.start_output_dir(output_dir, {}, {}, replace=False)
    output_folder.append_samples(output_dir, records)
    output_folder.write_metrics(output_dir, metrics)


def test_write_eval_outputs(tmp_path, monkeypatch, char_tokenizer):
    problem = Problem(question="What is 2+2?", solution="#### 4", gold="4", origin="hand:1")
    monkeypatch.setattr(
        evaluate_module, "generate", fake_generate_returning({problem.question: PERFECT})
    )
    metrics, records = evaluate(None, char_tokenizer, [problem], show_progress=False)
    out = tmp_path / "run" / "eval"  # created, parents included
    write_eval_outputs(out, metrics, records)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    lines = (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    sample = json.loads(lines[0])
    assert {"prompt", "completion", "extracted_answer", "gold", "rewards", "correct"} <= set(sample)
    assert sample["prompt"] == records[0]["prompt"] and "What is 2+2?" in sample["prompt"]
    assert sample["completion"] == PERFECT
    assert sample["extracted_answer"] == "4" and sample["gold"] == "4"
    assert sample["rewards"]["strict_format"] == 1.0
    assert set(sample["rewards"]) == set(DEFAULT_REWARD_WEIGHTS)


def test_write_eval_outputs_keeps_unicode(tmp_path):
    records = [{"prompt": "caf\u00e9", "completion": "\u0664", "rewards": {}}]
    write_eval_outputs(tmp_path, {"accuracy": 0.0}, records)
    assert json.loads((tmp_path / "samples.jsonl").read_text(encoding="utf-8")) == records[0]


# ----------------------------------------------------------------------------- Wilson intervals
@pytest.mark.parametrize(
    "successes, trials, low, high",
    [
        # the roots in p of (p - k/n)² = z²·p(1 - p)/n, solved separately as a quadratic
        (6, 200, 0.013820, 0.063895),
        (1, 200, 0.000883, 0.027774),
        (0, 10, 0.0, 0.277540),
        (10, 10, 0.722460, 1.0),
        (50, 100, 0.403830, 0.596170),
    ],
)
def test_wilson_interval_matches_hand_computation(successes, trials, low, high):
    from smolgrpo.evaluation.evaluate import wilson_interval

    got_low, got_high = wilson_interval(successes, trials)
    assert got_low == pytest.approx(low, abs=2e-6)
    assert got_high == pytest.approx(high, abs=2e-6)


def test_wilson_interval_rejects_impossible_counts_and_handles_empty():
    from smolgrpo.evaluation.evaluate import wilson_interval

    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_summarize_reports_an_interval_for_every_rate():
    from smolgrpo.evaluation.evaluate import INTERVAL_KEYS, summarize, wilson_interval

    records = [
        {
            "correct": i < 3,
            "correct_last_number": i < 5,
            "rewards": {"strict_format": 1.0 if i < 9 else 0.0, "soft_format": 1.0},
            "completion_tokens": 10,
            "truncated": i == 0,
            "total_reward": 1.0,
        }
        for i in range(10)
    ]
    metrics = summarize(records, 1)
    for key in INTERVAL_KEYS:
        assert f"{key}_ci95" in metrics
    assert metrics["accuracy_ci95"] == pytest.approx(list(wilson_interval(3, 10)))
    assert metrics["strict_format_rate_ci95"] == pytest.approx(list(wilson_interval(9, 10)))
    assert metrics["truncation_rate_ci95"] == pytest.approx(list(wilson_interval(1, 10)))


def test_format_rate_with_interval():
    from smolgrpo.evaluation.evaluate import format_rate_with_interval

    assert format_rate_with_interval(0.03, [0.01382, 0.0639]) == "3.0% [1.4, 6.4]"
    assert format_rate_with_interval(0.5, None) == "50.0%"
