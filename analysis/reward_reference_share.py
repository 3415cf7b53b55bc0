"""Share of GSM8K reference solutions that a reward scores at its maximum.

A reward that pays for reasoning should pay the reference reasoning in full: each train
problem's worked solution, calculator annotations (`<<48/2=24>>`) removed and the `#### answer`
line as the answer, is written in the response format (prompts.format_reference_response) and
scored. Run from the repository root:

    PYTHONPATH=src python3 analysis/reward_reference_share.py [train.jsonl] [--reward NAME]

It prints the count and share at the maximum (1.0) and a few of the solutions below it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from smolgrpo.rewards.builtin import REWARDS
from smolgrpo.tasks.data import Problem, read_jsonl
from smolgrpo.tasks.prompts import format_reference_response

MAXIMUM = 1.0


def reference_scores(
    problems: Sequence[Problem], reward: Callable[..., list[float]]
) -> list[float]:
    """The reward of each problem's own reference solution (the question passed beside it)."""
    completions = [format_reference_response(problem) for problem in problems]
    golds = [problem.gold for problem in problems]
    return reward(completions, golds, questions=[problem.question for problem in problems])


def count_at_maximum(scores: Sequence[float], maximum: float = MAXIMUM) -> tuple[int, int]:
    """(how many scores reach the maximum, how many scores): 0.999999 counts, 0.99 does not."""
    return sum(1 for score in scores if score >= maximum - 1e-9), len(scores)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(os.environ.get("SMOLGRPO_DATA_DIR", "data/gsm8k")) / "train.jsonl"
    parser.add_argument("path", nargs="?", type=Path, default=default)
    parser.add_argument("--reward", default="grounded_arithmetic", choices=["grounded_arithmetic"])
    parser.add_argument("--show", type=int, default=5, help="solutions below the maximum shown")
    args = parser.parse_args(argv)
    problems = read_jsonl(args.path)
    scores = reference_scores(problems, REWARDS[args.reward].function)
    at_maximum, total = count_at_maximum(scores)
    print(
        f"{args.reward}: {at_maximum} of {total} reference solutions at the maximum "
        f"({100 * at_maximum / total:.1f}%)"
    )
    shown = 0
    for problem, score in zip(problems, scores, strict=True):
        if score < MAXIMUM - 1e-9 and shown < args.show:
            shown += 1
            print(
                f"\n--- {problem.origin}: {score:.2f}\n{problem.question}\n"
                f"{format_reference_response(problem)}"
            )


if __name__ == "__main__":
    main()
