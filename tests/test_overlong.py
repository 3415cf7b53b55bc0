"""DAPO's soft overlong penalty (the `overlong_penalty` reward, rewards.overlong_buffer)."""

import pytest

from smolgrpo.config.schema import Config
from smolgrpo.errors import SmolGRPOError as Error
from smolgrpo.rewards.builtin import REWARDS, overlong_penalty_reward
from smolgrpo.rewards.scoring import score_completions


def test_penalty_values():
    # Lmax = 100, buffer 20: free up to 80 tokens, then linear down to -1 at 100.
    lengths = [0, 50, 80, 81, 90, 99, 100, 130]
    values = overlong_penalty_reward(
        ["x"] * len(lengths),
        completion_tokens=lengths,
        max_completion_length=100,
        overlong_buffer=20,
    )
    assert values == pytest.approx([0.0, 0.0, 0.0, -0.05, -0.5, -0.95, -1.0, -1.0])


def test_off_without_buffer_or_lengths():
    assert overlong_penalty_reward(["a", "b"], completion_tokens=[5, 100]) == [0.0, 0.0]
    assert overlong_penalty_reward(["a"], max_completion_length=10, overlong_buffer=5) == [0.0]
    assert REWARDS["overlong_penalty"].default_weight == 0.0


def test_scoring_passes_extra_fields():
    result = score_completions(
        ["<answer>1</answer>", "<answer>2</answer>"],
        ["1", "1"],
        {"correctness": 1.0, "overlong_penalty": 1.0},
        extra_fields={
            "completion_tokens": [10, 64],
            "max_completion_length": 64,
            "overlong_buffer": 16,
        },
    )
    assert result.per_reward["overlong_penalty"] == [0.0, -1.0]
    assert result.total == [1.0, -1.0]


def test_config_checks():
    config = Config()
    config.rewards.overlong_buffer = 32
    config.rewards.weights = {"correctness": 1.0, "overlong_penalty": 1.0}
    config.validate(weights_given=True)
    config.rewards.overlong_buffer = 0
    with pytest.raises(Error, match="overlong_buffer"):
        config.validate(weights_given=True)
    config.rewards.overlong_buffer = -1
    with pytest.raises(Error, match="overlong_buffer"):
        config.validate(weights_given=True)
    config.rewards.overlong_buffer = config.sampling.max_completion_length + 1
    with pytest.raises(Error, match="overlong_buffer"):
        config.validate(weights_given=True)
