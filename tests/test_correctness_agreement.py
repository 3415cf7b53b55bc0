"""One correctness decision: the correctness reward, eval's records and the report's badges agree
on literal completions (rewards/answers.py `is_correct` and `counts_as_correct`)."""

from __future__ import annotations

import pytest
import torch

import smolgrpo.evaluation.evaluate as evaluate_module
from smolgrpo.evaluation.evaluate import evaluate
from smolgrpo.generation.rollout import Rollout
from smolgrpo.reporting import html as report_html
from smolgrpo.rewards.answers import CORRECT, counts_as_correct, extract_answer, is_correct
from smolgrpo.rewards.builtin import correctness_reward
from smolgrpo.tasks.data import Problem

GOLD = "72"
COMPLETIONS = {
    "right": "<reasoning>\n6 * 12 = 72\n</reasoning>\n<answer>\n72\n</answer>",
    "right, written as money": "<reasoning>\nok\n</reasoning>\n<answer>\n$72.00\n</answer>",
    "wrong": "<reasoning>\n6 * 12 = 71\n</reasoning>\n<answer>\n71\n</answer>",
    "two answer blocks": "<answer>72</answer><answer>71</answer>",
    "Arabic-Indic digits": "<reasoning>\nx\n</reasoning>\n<answer>\n\u0667\u0662\n</answer>",
    "bold digits": "<reasoning>\nx\n</reasoning>\n<answer>\n\U0001d7d5\U0001d7d0\n</answer>",
    "no answer block": "<reasoning>\n6 * 12 = 72\n</reasoning>\nThe answer is 72",
}
EXPECTED = [True, True, False, False, False, False, False]


def _fake_generate(model, tokenizer, prompts, *, num_generations=1, **_):
    """rollout.generate answering each prompt (its question names a completion) with it."""
    names = [next(name for name in COMPLETIONS if f"<<{name}>>" in p) for p in prompts]
    responses = [COMPLETIONS[name] for name in names for _ in range(num_generations)]
    count = len(responses)
    return Rollout(
        prompt_ids=torch.ones(count, 3, dtype=torch.long),
        prompt_mask=torch.ones(count, 3, dtype=torch.long),
        completion_ids=torch.ones(count, 4, dtype=torch.long),
        completion_mask=torch.ones(count, 4, dtype=torch.long),
        truncated=torch.zeros(count, dtype=torch.bool),
        responses=responses,
    )


def test_reward_eval_and_report_agree(monkeypatch, char_tokenizer):
    texts = list(COMPLETIONS.values())
    rewards = correctness_reward(texts, [GOLD] * len(texts))
    assert [counts_as_correct(r) for r in rewards] == EXPECTED
    assert [is_correct(extract_answer(t), GOLD) for t in texts] == EXPECTED

    monkeypatch.setattr(evaluate_module, "generate", _fake_generate)
    # one completion per problem: the question is the completion's name, matched in the prompt
    problems = [Problem(f"<<{name}>>", f"#### {GOLD}", GOLD, name) for name in COMPLETIONS]
    _, records = evaluate(None, char_tokenizer, problems, show_progress=False)
    assert [r["completion"] for r in records] == texts
    assert [r["correct"] for r in records] == EXPECTED
    assert [r["rewards"]["correctness"] for r in records] == rewards

    for text, record, expected in zip(texts, records, EXPECTED, strict=True):
        logged = {"text": text, "rewards": record["rewards"]}
        assert report_html.is_correct(logged, GOLD) is expected  # the logged reward
        assert report_html.is_correct({"text": text}, GOLD) is expected  # none logged


@pytest.mark.parametrize(
    ("score", "right"), [(CORRECT, True), (0.999, False), (0.0, False), (float("nan"), False)]
)
def test_only_full_credit_counts_as_correct(score, right):
    assert counts_as_correct(score) is right
