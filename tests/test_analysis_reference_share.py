"""analysis/reward_reference_share.py: its count of reference solutions at the maximum."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from smolgrpo.rewards.builtin import REWARDS
from smolgrpo.tasks.data import Problem

SCRIPT = Path(__file__).parents[1] / "analysis" / "reward_reference_share.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reward_reference_share", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_count_at_maximum_counts_only_full_scores():
    script = load_script()
    assert script.count_at_maximum([1.0, 0.999_999_999_9, 0.99, 0.0]) == (2, 4)
    assert script.count_at_maximum([]) == (0, 0)


def test_reference_scores_strip_the_calculator_annotations():
    script = load_script()
    natalia = Problem(
        question="Natalia sold clips to 48 of her friends in April, and then she sold half as "
        "many clips in May. How many clips did Natalia sell altogether in April and May?",
        solution="Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
        gold="72",
        origin="literal:1",
    )
    pasted = Problem(
        question="Tom has 5 apples. How many apples does he have?",
        solution="8 + 2 = <<8+2=10>>10\n#### 10",
        gold="10",
        origin="literal:2",
    )
    scores = script.reference_scores([natalia, pasted], REWARDS["grounded_arithmetic"].function)
    assert scores == [1.0, 0.0]
    assert script.count_at_maximum(scores) == (1, 2)
