"""Does a reward tell right answers from wrong ones? Scored on held-out eval samples.

A shaping reward such as `grounded_arithmetic` is meant to pay reasoning that leads to the gold;
if it pays wrong answers as much as right ones, GRPO can raise it without raising accuracy.
This scores each sample of one or more `smolgrpo eval` folders with the reward (the question
read from the eval's own data file, by each record's origin line) and prints, for the right and
the wrong answers apart, how many there are, the mean reward and the share at its maximum.
Run from the repository root:

    python3 analysis/reward_by_correctness.py EVAL_DIR [EVAL_DIR ...] --data DIR [--reward NAME]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.evaluation.paired import problem_key, read_samples
from smolgrpo.rewards.builtin import REWARDS
from smolgrpo.tasks.data import read_jsonl

MAXIMUM = 1.0


def fail(message: str) -> None:
    print(f"reward_by_correctness: {message}", file=sys.stderr)
    sys.exit(2)


def questions_by_key(data_dir: Path) -> dict[str, str]:
    """`problem_key` (`test.jsonl:17`) -> the question, over the folder's train and test files."""
    questions = {}
    for split in ("train", "test"):
        path = data_dir / f"{split}.jsonl"
        if path.is_file():
            questions.update({Path(p.origin).name: p.question for p in read_jsonl(path)})
    return questions


def split_by_correctness(records: list[dict], scores: list[float]) -> dict[bool, list[float]]:
    """{right: its samples' scores, wrong: theirs}."""
    groups: dict[bool, list[float]] = {True: [], False: []}
    for record, score in zip(records, scores, strict=True):
        groups[bool(record["correct"])].append(score)
    return groups


def summary(scores: list[float]) -> str:
    if not scores:
        return "0 samples"
    at_maximum = sum(score >= MAXIMUM - 1e-9 for score in scores)
    return (
        f"{len(scores)} samples, mean {statistics.mean(scores):.3f}, "
        f"{100 * at_maximum / len(scores):.1f}% at the maximum"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("evals", nargs="+", type=Path, help="`smolgrpo eval` output folders")
    parser.add_argument("--data", type=Path, required=True, help="folder with the eval's JSONL")
    parser.add_argument("--reward", default="grounded_arithmetic", choices=sorted(REWARDS))
    args = parser.parse_args(argv)
    try:
        questions = questions_by_key(args.data)
        reward = REWARDS[args.reward].function
        for eval_dir in args.evals:
            records = read_samples(eval_dir)
            missing = [problem_key(r) for r in records if problem_key(r) not in questions]
            if missing:
                fail(f"{eval_dir}: problem {missing[0]} is not in {args.data}")
            scores = reward(
                [r["completion"] for r in records],
                [r["gold"] for r in records],
                questions=[questions[problem_key(r)] for r in records],
            )
            groups = split_by_correctness(records, scores)
            print(f"{eval_dir}: {args.reward}")
            print(f"  right answers: {summary(groups[True])}")
            print(f"  wrong answers: {summary(groups[False])}")
    except SmolGRPOError as error:
        fail(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
