"""GSM8K numbers are pinned: the task/reward/tracking refactors changed nothing they measure.

Two GRPO steps on the embedded SmolLM2-135M-Instruct and the first 16 GSM8K train problems
(1-shot prompt, G = 4, 64 tokens, seed 0). The expected values were produced by the code as it
was before the task abstraction, reward plug-ins and SFT existed, and the
current code gives them exactly on this project's CPU machine. Rewards are sums of a few
weights, so they are compared exactly; loss-side values to a relative 1e-4, which allows for
another CPU's float32 summation order, and the entropy (a sum over every token's whole
vocabulary) to 3e-4: on an AMD EPYC without AMX the unchanged code gives 1.5804368 for the first
step's 1.5806050 (1.1e-4 relative).
"""

from __future__ import annotations

import json

import pytest

from smolgrpo.config.loading import load_config
from smolgrpo.training.trainer import Trainer

EXPECTED = [
    {
        "reward_mean": 0.078125,
        "reward_std": 0.04133986423538423,
        "grad_norm": 1.8478367328643799,
        "entropy": 1.5806050300598145,
        "completion_length_mean": 64.0,
    },
    {
        "reward_mean": 0.125,
        "reward_std": 0.10825317547305482,
        "grad_norm": 1.9183741807937622,
        "entropy": 2.1323509216308594,
        "completion_length_mean": 64.0,
    },
]


@pytest.mark.integration
def test_two_gsm8k_steps_give_the_pinned_metrics(gsm8k_dir, tmp_path):
    config = load_config(
        None,
        [
            f"run.output_dir={tmp_path / 'run'}",
            "model.name=embedded",
            "model.device=cpu",
            f"data.source={gsm8k_dir}",
            "data.train_limit=16",
            "run.save_every=100",
            "run.log_samples_every=100",
            "sampling.num_generations=4",
            "sampling.max_completion_length=64",
            "optim.prompts_per_step=2",
            "optim.micro_batch_size=8",
            "optim.max_steps=2",
            "optim.learning_rate=1e-5",
            "optim.warmup_steps=0",
            "prompt.num_few_shot=1",
        ],
    )
    Trainer(config, overwrite=True, show_progress=False).train()
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row, expected in zip(rows, EXPECTED):
        assert row["reward_mean"] == expected["reward_mean"]
        assert row["completion_length_mean"] == expected["completion_length_mean"]
        for key in ("reward_std", "grad_norm"):
            assert row[key] == pytest.approx(expected[key], rel=1e-4), key
        assert row["entropy"] == pytest.approx(expected["entropy"], rel=3e-4)
