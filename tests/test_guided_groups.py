"""`grpo.guided_groups`: the last row of each group is the reference solution (LUFFY-style
off-policy guidance); it is scored and trained like a sample, but metrics describe samples only."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.algo.advantages import group_advantages
from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.generation.rollout import Rollout
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import format_reference_response
from smolgrpo.training.guided_groups import (
    add_reference_rows,
    clamp_reference_advantages,
    reference_completion_ids,
)
from smolgrpo.training.trainer import Trainer

PREFILL = "<reasoning>\n"


def gsm8k_problem(a: int, b: int) -> Problem:
    total = a + b
    return Problem(
        f"Tom has {a} apples and buys {b}. How many?",
        f"{a} + {b} = <<{a}+{b}={total}>>{total}\n#### {total}",
        str(total),
        f"toy:{a}",
    )


def fake_rollout(tokenizer, n: int, sampled: int, width: int, forced: bool) -> Rollout:
    """`sampled` rows per problem of `width` tokens, the k-th row's tokens all equal k + 10."""
    rows = n * sampled
    ids = torch.arange(rows).unsqueeze(1).repeat(1, width) + 10  # (rows, width)
    return Rollout(
        prompt_ids=torch.arange(rows).unsqueeze(1).repeat(1, 3) + 100,  # (rows, 3)
        prompt_mask=torch.ones(rows, 3, dtype=torch.long),
        completion_ids=ids,
        completion_mask=torch.ones(rows, width, dtype=torch.long),
        truncated=torch.ones(rows, dtype=torch.bool),
        responses=[f"sample {row}" for row in range(rows)],
        forced_mask=torch.ones(rows, width, dtype=torch.bool) if forced else None,
    )


@pytest.mark.parametrize("forced", [False, True])
def test_reference_rows_go_last_in_each_group(forced):
    tokenizer = build_char_tokenizer()
    problems = [gsm8k_problem(3, 4), gsm8k_problem(10, 5)]
    rollout = fake_rollout(tokenizer, n=2, sampled=2, width=4, forced=forced)
    guided, is_reference = add_reference_rows(rollout, problems, tokenizer, PREFILL, eos_id=2)

    assert is_reference.tolist() == [False, False, True, False, False, True]
    references = [reference_completion_ids(tokenizer, p, PREFILL, 2) for p in problems]
    # The reference text after the prefill, character by character, then EOS.
    expected_text = format_reference_response(problems[0])[len(PREFILL) :]
    assert tokenizer.decode(references[0][:-1]) == expected_text
    assert references[0][-1] == 2
    width = max(len(r) for r in references)
    assert guided.completion_ids.shape == (6, width)
    # Sampled rows keep their order and tokens (padded on the right, masked out).
    assert guided.completion_ids[[0, 1, 3, 4], 0].tolist() == [10, 11, 12, 13]
    assert guided.completion_mask[0].sum() == 4
    assert (guided.completion_ids[0, 4:] == tokenizer.pad_token_id).all()
    for row, reference in ((2, references[0]), (5, references[1])):
        assert guided.completion_ids[row, : len(reference)].tolist() == reference
        assert guided.completion_mask[row].sum() == len(reference)
    # A reference row is its group's prompt, never truncated, and the full response is scored.
    assert guided.prompt_ids[:, 0].tolist() == [100, 101, 100, 102, 103, 102]
    assert guided.truncated.tolist() == [True, True, False, True, True, False]
    assert guided.responses[2] == format_reference_response(problems[0])
    assert guided.responses[:2] == ["sample 0", "sample 1"]
    assert guided.responses[3:5] == ["sample 2", "sample 3"]
    if forced:  # the calculator's tokens stay forced; the reference has none
        assert guided.forced_mask[0, :4].all() and not guided.forced_mask[0, 4:].any()
        assert not guided.forced_mask[2].any()
    else:
        assert guided.forced_mask is None


def test_a_prefill_that_does_not_begin_the_reference_is_one_line():
    with pytest.raises(SmolGRPOError, match="grpo.guided_groups: the prompt's prefill 'Answer:'"):
        reference_completion_ids(build_char_tokenizer(), gsm8k_problem(1, 2), "Answer:", 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.task=jsonl", "data.source=x.jsonl"],
            "guided_groups needs worked solutions.*'jsonl'",
        ),
        (["data.task=reasoning_gym"], "guided_groups needs worked solutions.*'reasoning_gym'"),
    ],
)
def test_guided_groups_without_worked_solutions_is_one_line(overrides, message):
    with pytest.raises(SmolGRPOError, match=message):
        load_config(None, [*overrides, "grpo.guided_groups=true"])


def test_the_reference_is_trained_with_the_group_advantage_and_kept_out_of_metrics(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for split, numbers in (("train", range(1, 5)), ("test", range(20, 22))):
        rows = [
            {"question": p.question, "answer": p.solution}
            for p in (gsm8k_problem(n, n + 1) for n in numbers)
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(
        None,
        [
            f"data.source={folder}",
            f"run.output_dir={tmp_path / 'run'}",
            "grpo.guided_groups=true",
            "sampling.num_generations=4",
            "sampling.max_completion_length=8",  # shorter than any reference
            "optim.prompts_per_step=2",
            "optim.max_steps=1",
            "optim.warmup_steps=0",
            "prompt.num_few_shot=0",
            "run.log_samples_every=1",
        ],
    )
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer))
    trainer = Trainer(config, model=model, tokenizer=tokenizer, show_progress=False)
    batches = []
    train_on_batch = trainer.train_on_batch
    trainer.train_on_batch = lambda batch: batches.append(batch) or train_on_batch(batch)
    trainer.train()

    (batch,) = batches
    assert batch.completion_ids.shape[0] == 8  # 2 groups of 3 samples + the reference
    texts = [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        for ids, mask in zip(batch.completion_ids, batch.completion_mask)
    ]
    train = [gsm8k_problem(n, n + 1) for n in range(1, 5)]
    references = {format_reference_response(p)[len(PREFILL) :] for p in train}
    for group in range(2):
        assert texts[group * 4 + 3] in references  # the whole reference, no calculator marks
        assert all(len(t) <= 8 for t in texts[group * 4 : group * 4 + 3])  # sampled
    # A random tiny model is never right: the reference alone is pulled up in its group, and
    # the group's advantages are centred as usual.
    advantages = batch.advantages.view(2, 4)
    assert (advantages[:, 3] > 1).all() and (advantages[:, :3] < 0).all()
    assert torch.allclose(advantages.sum(dim=1), torch.zeros(2), atol=1e-5)

    row = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    assert row["accuracy"] == 0.0  # over the samples: the right reference is not counted
    assert row["completion_length_max"] <= 8
    samples = [json.loads(line) for line in next((tmp_path / "run/samples").glob("*.jsonl")).open()]
    assert [len(s["completions"]) for s in samples] == [3, 3]  # the policy's samples only


def test_model_card_says_the_groups_were_guided():
    from smolgrpo.reporting.model_card import build_model_card

    guided = build_model_card(load_config(None, ["grpo.guided_groups=true"]).to_dict(), [])
    line = next(line for line in guided.splitlines() if line.startswith("- GRPO: "))
    assert line.endswith(
        "; guided groups (the last of each group's completions was the train problem's "
        "reference solution, not a sample)"
    )
    plain = build_model_card(load_config(None, []).to_dict(), [])
    assert "guided groups" not in plain


def test_the_reference_advantage_is_never_negative():
    # every sample right (1.0), the reference scored a little lower (0.9): without the clamp it
    # would be pushed down with an advantage of about -2.47
    rewards = torch.tensor([1.0] * 7 + [0.9])  # (G,) one group, the reference last
    is_reference = torch.tensor([False] * 7 + [True])
    advantages, _ = group_advantages(rewards, 8, "group")
    assert advantages[7] == pytest.approx(-0.0875 / (0.03536 + 1e-4), abs=1e-3)  # -2.47
    clamped = clamp_reference_advantages(advantages, is_reference)
    assert clamped[7] == 0.0
    assert torch.equal(clamped[:7], advantages[:7])  # the samples keep theirs
    # a reference above wrong samples keeps its positive advantage
    wrong = torch.tensor([0.0] * 7 + [2.0])
    up, _ = group_advantages(wrong, 8, "group")
    assert torch.equal(clamp_reference_advantages(up, is_reference), up) and up[7] > 0
